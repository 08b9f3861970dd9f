import type { JetStreamManager } from '@nats-io/jetstream';
import type { Logger } from '../logger.ts';
import type { Metrics } from './metrics.ts';
import { PeriodicTask } from '../periodic-task.ts';

/** What the collector reads of a shard consumer (ShardConsumer satisfies it). */
export interface AppliedShard {
  readonly options: { readonly shard: number; readonly stream: string };
  /** Highest stream sequence applied. */
  readonly position: number;
}

export interface ShardLag {
  readonly shard: number;
  /** The stream's last sequence at the last check. */
  readonly streamLastSeq: number;
  /** Applied position at the last check. */
  readonly position: number;
  /** streamLastSeq - position, never negative. */
  readonly lagMessages: number;
  /** Age of the oldest unapplied message, 0 when caught up. */
  readonly lagSeconds: number;
  /** When this was measured, ms since the epoch. */
  readonly checkedAt: number;
}

export interface LagCollectorDeps {
  readonly jsm: JetStreamManager;
  /** The shard consumers of this node, read on every tick (empty when `replicate = false`). */
  readonly shards: () => readonly AppliedShard[];
  /** Changes still to publish (a count on the database). */
  readonly pending: () => number;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

export interface LagCollectorOptions {
  readonly intervalMs: number;
}

/**
 * Measures replication lag in both directions every `intervalMs`:
 * - outbound: `pending_publish`, refreshed here too because the publisher only
 *   sets it when its scan runs dry, so under sustained load it would go stale
 *   exactly when it matters;
 * - inbound, per shard: `replication_lag_messages` = stream last sequence minus
 *   applied position (one `streams.info` per shard), and while messages wait,
 *   `replication_lag_seconds` = age of the oldest unapplied message (its stored
 *   time, one direct get), 0 when caught up. Between ticks the consumer sets
 *   lag seconds to the age of each change it applies.
 * Failures (NATS down) keep the last values and are logged at debug level.
 */
export class LagCollector {
  readonly #deps: LagCollectorDeps;
  readonly #lag = new Map<number, ShardLag>();
  readonly #task: PeriodicTask;

  constructor(deps: LagCollectorDeps, options: LagCollectorOptions) {
    this.#deps = deps;
    this.#task = new PeriodicTask(() => this.collect(), options.intervalMs);
  }

  /** The last measurement of a shard, if any. */
  shard(shard: number): ShardLag | undefined {
    return this.#lag.get(shard);
  }

  /** Starts measuring (the first measurement starts at once). */
  open(): void {
    this.#task.open();
  }

  async close(): Promise<void> {
    await this.#task.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** One measurement of every shard; never rejects. */
  async collect(): Promise<void> {
    const { metrics, logger } = this.#deps;
    try {
      metrics.pendingPublish.set(this.#deps.pending());
    } catch (err) {
      logger.debug({ err: String(err) }, 'counting pending changes failed');
    }
    await Promise.all(this.#deps.shards().map((s) => this.#collectShard(s)));
  }

  async #collectShard(s: AppliedShard): Promise<void> {
    const { jsm, metrics, logger } = this.#deps;
    const { shard, stream } = s.options;
    try {
      const info = await jsm.streams.info(stream);
      if (this.#task.closed) return;
      const position = s.position;
      const lastSeq = info.state.last_seq;
      const lagMessages = Math.max(0, lastSeq - position);
      let lagSeconds = 0;
      if (lagMessages > 0) {
        // The oldest unapplied message may be gone (discarded: the shard is behind); then the first kept one.
        const seq = Math.max(position + 1, info.state.first_seq);
        const msg = await jsm.streams.getMessage(stream, { seq }).catch(() => null);
        if (msg !== null) lagSeconds = Math.max(0, (Date.now() - msg.time.getTime()) / 1000);
      }
      const label = { shard: String(shard) };
      metrics.lagMessages.set(label, lagMessages);
      metrics.lagSeconds.set(label, lagSeconds);
      this.#lag.set(shard, {
        shard,
        streamLastSeq: lastSeq,
        position,
        lagMessages,
        lagSeconds,
        checkedAt: Date.now(),
      });
    } catch (err) {
      if (!this.#task.closed) logger.debug({ shard, err: String(err) }, 'measuring replication lag failed');
    }
  }
}
