import { DeliverPolicy, type ConsumerMessages, type JetStreamClient } from '@nats-io/jetstream';
import { Wakeup } from '../changelog/wakeup.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { ApplyResult, InboundMessage } from './batch-applier.ts';
import type { ShardPool } from './shard-pool.ts';
import type { WriterQueue } from './writer-queue.ts';

export interface ShardConsumerOptions {
  readonly shard: number;
  readonly stream: string;
  /** Max messages per apply transaction. */
  readonly maxBatchMessages: number;
  /** How often a shard held by a schema lag re-checks, ms. */
  readonly schemaRetryMs: number;
}

export interface ShardConsumerDeps {
  readonly js: JetStreamClient;
  readonly pool: ShardPool;
  readonly writer: WriterQueue;
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export type ShardConsumerState =
  | { readonly type: 'starting' }
  | { readonly type: 'running' }
  | {
      readonly type: 'waiting-for-schema';
      readonly seq: number;
      readonly reason: string;
      readonly since: number;
    }
  | { readonly type: 'behind'; readonly position: number; readonly firstSeq: number }
  | { readonly type: 'failing'; readonly reason: string };

/** Buffered messages beyond which reading from NATS pauses. */
const HIGH_WATER = 20_000;

/**
 * Replays one shard stream: an ordered consumer from the stored position + 1
 * (the position lives in the database, written with the rows, so it can never
 * run ahead of what was applied; an ordered consumer has no acks to stall on).
 * Messages are applied in batches through the writer queue by the shard's
 * worker. A message waiting for this node's schema holds the shard, in order,
 * until a schema change or the periodic re-check lets it apply (invariant 5).
 */
export class ShardConsumer {
  readonly #deps: ShardConsumerDeps;
  readonly options: ShardConsumerOptions;
  readonly #buffer: InboundMessage[] = [];
  readonly #arrived = new Wakeup();
  readonly #drained = new Wakeup();
  readonly #retry = new Wakeup();
  #abort = new AbortController();
  #loops: Promise<void>[] = [];
  #messages: ConsumerMessages | undefined;
  #state: ShardConsumerState = { type: 'starting' };
  /** Highest stream sequence applied (the stored position). */
  position = 0;
  /** Time of the last applied message, ms since the epoch (0 = none yet). */
  lastApplyAt = 0;
  /** CreatedAt of the newest change applied, ms. */
  lastChangeAt = 0;

  constructor(deps: ShardConsumerDeps, options: ShardConsumerOptions) {
    this.#deps = deps;
    this.options = options;
  }

  get state(): ShardConsumerState {
    return this.#state;
  }

  /** The message holding this shard, if any (for the operator's dead-letter command). */
  get heldMessage(): InboundMessage | undefined {
    return this.#state.type === 'waiting-for-schema' ? this.#buffer[0] : undefined;
  }

  #setState(state: ShardConsumerState): void {
    const shard = String(this.options.shard);
    this.#deps.metrics.shardWaiting.set({ shard }, state.type === 'waiting-for-schema' ? 1 : 0);
    this.#deps.metrics.shardBehind.set({ shard }, state.type === 'behind' ? 1 : 0);
    this.#state = state;
  }

  /** The schema changed: a held message may apply now. */
  schemaChanged(): void {
    this.#retry.notify();
  }

  async open(): Promise<void> {
    this.position = await this.#deps.pool.position(this.options.shard);
    this.#deps.metrics.appliedPosition.set({ shard: String(this.options.shard) }, this.position);
    const signal = this.#abort.signal;
    this.#loops = [this.#readLoop(signal), this.#applyLoop(signal)];
  }

  async close(): Promise<void> {
    this.#abort.abort();
    this.#arrived.notify();
    await this.#messages?.close().catch(() => undefined);
    await Promise.allSettled(this.#loops);
    this.#loops = [];
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #readLoop(signal: AbortSignal): Promise<void> {
    const { js, logger } = this.#deps;
    const { shard, stream } = this.options;
    while (!signal.aborted) {
      try {
        const start = this.position + 1;
        const consumer = await js.consumers.get(stream, {
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: start,
        });
        const messages = await consumer.consume({ max_messages: 1000 });
        this.#messages = messages;
        if (signal.aborted) break;
        let expected = start;
        for await (const m of messages) {
          if (m.seq > expected && this.#buffer.length === 0 && this.position + 1 < m.seq) {
            // The stream discarded messages this node never applied: replaying on would leave a gap.
            this.#setState({ type: 'behind', position: this.position, firstSeq: m.seq });
            logger.error(
              { shard, position: this.position, first_available: m.seq },
              "stream no longer holds the messages after this node's position; a snapshot restore is needed",
            );
            await messages.close();
            return;
          }
          expected = m.seq + 1;
          this.#buffer.push({ seq: m.seq, msgId: m.headers?.get('Nats-Msg-Id') || undefined, data: m.data });
          this.#arrived.notify();
          while (this.#buffer.length >= HIGH_WATER && !signal.aborted) await this.#drained.wait(signal);
          if (signal.aborted) break;
        }
      } catch (err) {
        if (signal.aborted) return;
        logger.warn({ shard, err: String((err as Error).message ?? err) }, 'consumer failed; recreating');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  async #applyLoop(signal: AbortSignal): Promise<void> {
    const { pool, writer, logger, metrics } = this.#deps;
    const { shard, maxBatchMessages, schemaRetryMs } = this.options;
    const label = { shard: String(shard) };
    let backoffMs = 100;
    while (!signal.aborted) {
      if (this.#buffer.length === 0) {
        await this.#arrived.wait(signal);
        continue;
      }
      const batch = this.#buffer.slice(0, maxBatchMessages);
      let result: ApplyResult;
      const t0 = performance.now();
      try {
        result = await writer.run(() => pool.apply(shard, batch));
        backoffMs = 100;
      } catch (err) {
        if (signal.aborted) return;
        this.#setState({ type: 'failing', reason: String((err as Error).message ?? err) });
        logger.error({ shard, err: String((err as Error).message ?? err) }, 'apply failed; retrying');
        await this.#retry.waitFor(backoffMs, signal);
        backoffMs = Math.min(backoffMs * 2, 5000);
        continue;
      }
      metrics.applyLatency.observe(label, (performance.now() - t0) / 1000);
      metrics.applyBatchSize.observe(label, batch.length);
      let done = 0;
      while (done < this.#buffer.length && this.#buffer[done]!.seq <= result.position) done++;
      this.#buffer.splice(0, done);
      this.#drained.notify();
      this.position = result.position;
      metrics.appliedPosition.set(label, result.position);
      if (result.appliedChanges > 0) metrics.applied.inc(label, result.appliedChanges);
      if (result.duplicates > 0) metrics.duplicatesSkipped.inc(label, result.duplicates);
      if (result.displaced > 0) {
        metrics.uniqueDisplaced.inc(label, result.displaced);
        logger.info(
          { shard, rows: result.displaced },
          'removed rows whose UNIQUE value an applied change took',
        );
      }
      for (const d of result.deadLettered) {
        metrics.deadLetters.inc(label);
        logger.error(
          { shard, seq: d.seq, reason: d.reason },
          'message can never apply; moved to the dead letters',
        );
      }
      if (result.lastChangeAt > 0) {
        this.lastChangeAt = result.lastChangeAt;
        metrics.lagSeconds.set(label, Math.max(0, (Date.now() - result.lastChangeAt) / 1000));
      }
      if (result.appliedMessages > 0) this.lastApplyAt = Date.now();
      if (result.blocked !== undefined) {
        const { seq, reason } = result.blocked;
        if (this.#state.type !== 'waiting-for-schema' || this.#state.seq !== seq) {
          logger.warn(
            { shard, seq, reason },
            "shard waits for this node's schema to catch up; other shards go on",
          );
          this.#setState({ type: 'waiting-for-schema', seq, reason, since: Date.now() });
        }
        await this.#retry.waitFor(schemaRetryMs, signal);
        continue;
      }
      if (this.#state.type !== 'running') {
        if (this.#state.type === 'waiting-for-schema')
          logger.info({ shard, seq: this.#state.seq }, 'schema caught up; shard resumes');
        this.#setState({ type: 'running' });
      }
    }
  }

  /**
   * Operator command: moves the message holding this shard to the dead letters
   * and resumes. Returns its sequence, or undefined when nothing is held.
   */
  async deadLetterHeld(reason: string): Promise<number | undefined> {
    const held = this.heldMessage;
    if (held === undefined) return undefined;
    await this.#deps.writer.run(() => this.#deps.pool.deadLetter(this.options.shard, held, reason));
    this.#retry.notify();
    return held.seq;
  }
}
