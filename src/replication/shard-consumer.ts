import {
  DeliverPolicy,
  type Consumer,
  type ConsumerMessages,
  type JetStreamClient,
} from '@nats-io/jetstream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Wakeup } from '../changelog/wakeup.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import type { ApplyResult, InboundMessage } from './batch-applier.ts';
import { SIGNATURE_HEADER } from './batch-signature.ts';
import { parseMsgId } from './msg-id.ts';
import type { OriginSeqCeiling } from './origin-seq-ceiling.ts';
import type { OriginVerifier } from './origin-verifier.ts';
import type { ShardPool } from './shard-pool.ts';
import { WorkerDiedError } from './worker-died-error.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';
import { errorMessage } from '../error-message.ts';

export interface ShardConsumerOptions {
  readonly shard: number;
  readonly stream: string;
  /** Max messages per apply transaction. */
  readonly maxBatchMessages: number;
  /** How often a shard held by a schema lag re-checks, ms. */
  readonly schemaRetryMs: number;
  /** How long a message may hold the shard for the schema before it is dead-lettered, ms; 0 = no limit. */
  readonly maxHoldMs: number;
  /** How long an apply may wait for SQLite's write lock in all, ms (`busy_timeout`). */
  readonly busyTimeoutMs: number;
}

export interface ShardConsumerDeps {
  readonly js: JetStreamClient;
  readonly pool: ShardPool;
  readonly writer: WriterQueue;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Checks each batch's origin signature before anything applies it; none: every batch is trusted. */
  readonly verifier?: OriginVerifier;
  /** Refuses batch seqs beyond what their origin reserved; none: any seq is taken. */
  readonly seqCeiling?: OriginSeqCeiling;
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

/** Buffered messages, or bytes, beyond which reading from NATS pauses (a message may be up to 1 MB). */
const HIGH_WATER = 20_000;
const HIGH_WATER_BYTES = 16 * 1024 * 1024;
/** Message bytes beyond which an apply transaction takes no further message (each is copied to the worker). */
const APPLY_BATCH_BYTES = 4 * 1024 * 1024;
/** How long one apply attempt waits for SQLite's write lock, ms (see #applyWhenLockFree). */
const LOCK_TRY_MS = 5;
/**
 * Idle heartbeat of the pull requests: two missed ones mean the consumer's
 * server is gone (detected in about 3 s). Pull requests themselves live long:
 * with short-lived ones (3 s, heartbeat = half), a busy node regularly stopped
 * receiving for two heartbeats around an expiry and recreated its consumer, a
 * 3 s stall (measured at 4-8 shards; nats.js 3 and nats-server 2.9).
 */
const CONSUME_HEARTBEAT_MS = 1500;
const CONSUME_EXPIRES_MS = 30_000;
/** Consumer events after which a fresh consumer is created (see #readLoop). */
const INTERRUPTIONS: ReadonlySet<string> = new Set([
  'reset',
  'heartbeats_missed',
  'consumer_not_found',
  'consumer_deleted',
  'stream_not_found',
]);

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
  #bufferedBytes = 0;
  readonly #arrived = new Wakeup();
  readonly #drained = new Wakeup();
  readonly #retry = new Wakeup();
  #abort = new AbortController();
  #loops: Promise<void>[] = [];
  #messages: ConsumerMessages | undefined;
  #state: ShardConsumerState = { type: 'starting' };
  /** Highest stream sequence applied (as stored). */
  position = 0;
  /** Highest stream sequence read into the buffer (the next consumer starts after it). */
  #lastRead = 0;
  /** Stops the current consumer so that the read loop creates a fresh one (set while one runs). */
  #interrupt: ((why: string) => void) | undefined;
  /** Time of the last applied message, ms since the epoch (0 = none yet). */
  lastApplyAt = 0;
  /** CreatedAt of the newest change applied, ms. */
  lastChangeAt = 0;
  /** Messages dropped as already applied since start (for health; the metric counts them too). */
  duplicatesSkipped = 0;
  /** Messages dead-lettered since start (for health). */
  deadLetters = 0;
  /** Sequence of the first message of a batch whose worker died: applied alone next, dead-lettered if it kills again. */
  #suspect: number | undefined;
  /**
   * Buffered messages refused before apply (origin not verified, seq beyond its reservation), by
   * sequence: dead-lettered when they reach the head, never moving the origin's stored sequence.
   */
  readonly #refused = new Map<number, { readonly reason: string; readonly seqCeiling: boolean }>();

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

  /**
   * The NATS connection came back (possibly to another server): start a fresh consumer. After a
   * reconnect the library re-checks its consumer with CONSUMER.INFO and, while that times out (the
   * consumer lived on the server that went away), it retries without end and without heartbeat
   * checks: the shard would stall until that server returns. A fresh consumer is placed on a live one.
   */
  reconnected(): void {
    this.#interrupt?.('reconnected');
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
    // Not awaited: a ConsumerMessages' close() resolves only once its iterator runs again (see #readLoop).
    void this.#messages?.close().catch(() => undefined);
    await Promise.allSettled(this.#loops);
    this.#loops = [];
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /**
   * Reads the stream into the buffer with an ordered consumer. Each consumer
   * starts right after the last message received (buffered or applied), so a
   * message is never read twice nor skipped. When the library's consumer is
   * interrupted (its server restarted or died: a reset, missed heartbeats, the
   * consumer gone), this loop drops it and creates a fresh one: the library's
   * own recreation keeps the pull credit of the dead request and can stall
   * until that request would have expired, and it keeps polling a consumer
   * whose (R1, in-memory) server is down instead of moving to a live one.
   */
  async #readLoop(signal: AbortSignal): Promise<void> {
    const { js, logger } = this.#deps;
    const { shard, stream } = this.options;
    let failures = 0;
    while (!signal.aborted) {
      let messages: ConsumerMessages | undefined;
      let consumer: Consumer | undefined;
      let interrupted: string | undefined;
      try {
        const start = Math.max(this.position, this.#lastRead) + 1;
        consumer = await js.consumers.get(stream, {
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: start,
        });
        messages = await consumer.consume({
          max_messages: 1000,
          expires: CONSUME_EXPIRES_MS,
          idle_heartbeat: CONSUME_HEARTBEAT_MS,
        });
        this.#messages = messages;
        if (signal.aborted) break;
        // Consuming: an idle shard is running, not starting (a held or failing apply keeps its state).
        if (this.#state.type === 'starting') this.#setState({ type: 'running' });
        const current = messages;
        const interrupt = (why: string): void => {
          interrupted ??= why;
          void current.close().catch(() => undefined);
        };
        this.#interrupt = interrupt;
        void (async () => {
          for await (const st of current.status()) {
            if (INTERRUPTIONS.has(st.type)) {
              interrupt(st.type);
              break;
            }
          }
        })();
        let first = true;
        for await (const m of messages) {
          if (first && m.seq > start && this.position + 1 < m.seq) {
            // The stream discarded messages this node never applied: replaying on would leave a gap.
            this.#setState({ type: 'behind', position: this.position, firstSeq: m.seq });
            logger.error(
              { shard, position: this.position, first_available: m.seq },
              "stream no longer holds the messages after this node's position; a snapshot restore is needed",
            );
            return; // leaving the for-await stops the consumer
          }
          first = false;
          failures = 0;
          if (m.seq <= this.#lastRead) continue; // already buffered (defensive: never twice)
          const inbound: InboundMessage = {
            seq: m.seq,
            msgId: m.headers?.get('Nats-Msg-Id') || undefined,
            data: m.data,
          };
          const refusal = await this.#refusal(inbound, m.headers?.get(SIGNATURE_HEADER) || undefined);
          if (refusal !== undefined) this.#refused.set(m.seq, refusal);
          // After the check: a check that failed (registry unreachable) reads this message again.
          this.#lastRead = m.seq;
          this.#buffer.push(inbound);
          this.#arrived.notify();
          this.#bufferedBytes += m.data.length;
          while (
            (this.#buffer.length >= HIGH_WATER || this.#bufferedBytes >= HIGH_WATER_BYTES) &&
            !signal.aborted
          )
            await this.#drained.wait(signal);
          if (signal.aborted) break;
        }
        if (signal.aborted) break;
        logger.info(
          { shard, reason: interrupted ?? 'ended', next_seq: Math.max(this.position, this.#lastRead) + 1 },
          'consumer interrupted; recreating it after the last message received',
        );
      } catch (err) {
        if (signal.aborted) return;
        failures++;
        logger.warn({ shard, err: errorMessage(err) }, 'consumer failed; recreating');
      } finally {
        this.#interrupt = undefined;
        // Never awaited: nats.js resolves close() from inside the iterator, so awaiting it while the
        // iterator is not being read (inside the loop body, or before the loop started) never returns.
        // Its subscription and timers are released at once either way.
        void messages?.close().catch(() => undefined);
        // The library names its consumers; ours is ephemeral, delete it now rather than after its inactivity timeout.
        if (!signal.aborted) void consumer?.delete().catch(() => undefined);
      }
      await sleep(Math.min(100 * 2 ** failures, 2000), undefined, { signal }).catch(() => undefined);
    }
  }

  /** Why a received batch must not be applied, checked before it is buffered; undefined: it may be. */
  async #refusal(
    m: InboundMessage,
    signature: string | undefined,
  ): Promise<{ reason: string; seqCeiling: boolean } | undefined> {
    const { verifier, seqCeiling } = this.#deps;
    const unverified = await verifier?.refusal(m, signature, this.options.shard);
    if (unverified !== undefined) return { reason: unverified, seqCeiling: false };
    const id = seqCeiling === undefined ? undefined : parseMsgId(m.msgId);
    const beyond = id === undefined ? undefined : await seqCeiling!.refusal(id);
    return beyond === undefined ? undefined : { reason: beyond, seqCeiling: true };
  }

  /** The buffered messages of the next apply transaction: at most `max`, and a bounded copy to the worker. */
  #nextBatch(max: number): InboundMessage[] {
    if (this.#buffer[0]?.seq === this.#suspect) return this.#buffer.slice(0, 1);
    let bytes = 0;
    let n = 0;
    while (
      n < this.#buffer.length &&
      n < max &&
      (n === 0 || bytes < APPLY_BATCH_BYTES) &&
      (this.#refused.size === 0 || !this.#refused.has(this.#buffer[n]!.seq))
    )
      bytes += this.#buffer[n++]!.data.length;
    return this.#buffer.slice(0, n);
  }

  /** Messages up to `position` are done: off the buffer, and the position moves on. */
  #advanceTo(position: number): void {
    let done = 0;
    while (done < this.#buffer.length && this.#buffer[done]!.seq <= position) done++;
    for (const m of this.#buffer.splice(0, done)) {
      this.#bufferedBytes -= m.data.length;
      this.#refused.delete(m.seq);
    }
    this.#drained.notify();
    this.position = position;
    this.#deps.metrics.appliedPosition.set({ shard: String(this.options.shard) }, position);
  }

  /**
   * One apply transaction. Each attempt waits at most LOCK_TRY_MS for SQLite's
   * write lock; between attempts the writer queue is free, so this node's
   * publisher is not stuck behind an apply that waits for the application.
   * SQLITE_BUSY only after `busyTimeoutMs` in all.
   */
  async #applyWhenLockFree(batch: InboundMessage[], signal: AbortSignal): Promise<ApplyResult> {
    const { pool, writer } = this.#deps;
    // Time spent trying for the lock, not waiting in the writer queue behind other jobs.
    for (let tried = LOCK_TRY_MS; ; tried += LOCK_TRY_MS) {
      const result = await writer.run(() => pool.apply(this.options.shard, batch, LOCK_TRY_MS));
      if (result !== undefined) return result;
      if (tried >= this.options.busyTimeoutMs || signal.aborted) {
        this.#deps.metrics.sqliteBusy.inc();
        throw Object.assign(new Error(`database is locked (waited ${this.options.busyTimeoutMs} ms)`), {
          code: 'SQLITE_BUSY',
        });
      }
      await sleep(1);
    }
  }

  async #applyLoop(signal: AbortSignal): Promise<void> {
    const { logger, metrics } = this.#deps;
    const { shard, maxBatchMessages, schemaRetryMs } = this.options;
    const label = { shard: String(shard) };
    let backoffMs = 100;
    while (!signal.aborted) {
      if (this.#buffer.length === 0) {
        await this.#arrived.wait(signal);
        continue;
      }
      const refusal = this.#refused.get(this.#buffer[0]!.seq);
      if (refusal !== undefined) {
        if (await this.#tryDeadLetter(this.#buffer[0]!, refusal.reason, signal))
          (refusal.seqCeiling ? metrics.originSeqRefused : metrics.originRefused).inc(label);
        continue;
      }
      const batch = this.#nextBatch(maxBatchMessages);
      let result: ApplyResult;
      const t0 = performance.now();
      try {
        result = await this.#applyWhenLockFree(batch, signal);
        backoffMs = 100;
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof WorkerDiedError) {
          const first = batch[0]!;
          if (batch.length === 1 && this.#suspect === first.seq) {
            if (await this.#tryDeadLetter(first, `killed the shard worker twice (${err.message})`, signal))
              this.#setState({ type: 'running' });
            continue;
          }
          // Which message killed it is unknown: the first one goes alone next.
          this.#suspect = first.seq;
        }
        this.#setState({ type: 'failing', reason: errorMessage(err) });
        logger.error({ shard, err: errorMessage(err) }, 'apply failed; retrying');
        await this.#retry.waitFor(backoffMs, signal);
        backoffMs = Math.min(backoffMs * 2, 5000);
        continue;
      }
      this.#suspect = undefined;
      metrics.applyLatency.observe(label, (performance.now() - t0) / 1000);
      metrics.applyBatchSize.observe(label, batch.length);
      this.#advanceTo(result.position);
      if (result.appliedChanges > 0) metrics.applied.inc(label, result.appliedChanges);
      if (result.duplicates > 0) {
        metrics.duplicatesSkipped.inc(label, result.duplicates);
        this.duplicatesSkipped += result.duplicates;
      }
      this.#countResolved(result);
      for (const d of result.deadLettered) {
        metrics.deadLetters.inc(label);
        this.deadLetters++;
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
        if (await this.#holdExpired(seq, reason)) continue;
        const since = this.#state.type === 'waiting-for-schema' ? this.#state.since : Date.now();
        const left = this.options.maxHoldMs - (Date.now() - since);
        // With a limit, the re-check comes when the hold expires at the latest.
        await this.#retry.waitFor(
          this.options.maxHoldMs > 0 ? Math.max(1, Math.min(schemaRetryMs, left)) : schemaRetryMs,
          signal,
        );
        continue;
      }
      if (this.#state.type !== 'running') {
        if (this.#state.type === 'waiting-for-schema')
          logger.info({ shard, seq: this.#state.seq }, 'schema caught up; shard resumes');
        this.#setState({ type: 'running' });
      }
    }
  }

  /** Counts (and logs what an operator should see of) what the changes came to, by version. */
  #countResolved(result: ApplyResult): void {
    const { logger, metrics } = this.#deps;
    const shard = this.options.shard;
    const label = { shard: String(shard) };
    const r = result.resolved;
    if (r.superseded > 0) metrics.versionsSuperseded.inc(label, r.superseded);
    if (r.deferred > 0) metrics.changesDeferred.inc(label, r.deferred);
    if (r.conflicts > 0) metrics.conflicts.inc(label, r.conflicts);
    if (r.displaced > 0) {
      metrics.uniqueDisplaced.inc(label, r.displaced);
      logger.info(
        { shard, rows: r.displaced },
        'rows lost a UNIQUE value to a newer row; kept in the conflict log and restored when the value is free',
      );
    }
    if (r.refused > 0) metrics.changesRefused.inc(label, r.refused);
    const o = result.oldSchema;
    if (o.mapped > 0) metrics.oldSchemaChanges.inc({ ...label, outcome: 'mapped' }, o.mapped);
    if (o.skipped > 0) metrics.oldSchemaChanges.inc({ ...label, outcome: 'skipped' }, o.skipped);
    if (o.droppedValues > 0)
      metrics.oldSchemaChanges.inc({ ...label, outcome: 'dropped_value' }, o.droppedValues);
    if (r.refused > 0 || o.skipped > 0 || o.droppedValues > 0) {
      logger.warn(
        {
          shard,
          refused: r.refused,
          skipped: o.skipped,
          dropped_values: o.droppedValues,
          reasons: result.reasons,
        },
        'changes refused by this node (conflict log) or naming a dropped table or column; the shard goes on',
      );
    }
    if (o.mapped > 0)
      logger.info(
        { shard, changes: o.mapped },
        "changes from the old schema applied under this node's new names",
      );
    if (r.aheadOfClock > 0) {
      metrics.versionsAheadOfClock.inc(label, r.aheadOfClock);
      logger.warn(
        { shard, changes: r.aheadOfClock },
        "applied changes whose versions are ahead of this node's clock by more than max_clock_skew: check the clocks",
      );
    }
  }

  /**
   * The operator's limit on schema holds (`max_hold`): a message that held the shard that
   * long goes to the dead letters by itself, so a publisher cannot hold a shard forever.
   */
  async #holdExpired(seq: number, reason: string): Promise<boolean> {
    const { maxHoldMs, shard } = this.options;
    const st = this.#state;
    const head = this.#buffer[0];
    if (maxHoldMs <= 0 || st.type !== 'waiting-for-schema' || head?.seq !== seq) return false;
    const heldMs = Date.now() - st.since;
    if (heldMs < maxHoldMs) return false;
    const why = `held the shard ${Math.round(heldMs / 1000)} s for the schema, past max_hold: ${reason}`;
    if (!(await this.#tryDeadLetter(head, why, this.#abort.signal))) return false;
    this.#deps.metrics.holdsExpired.inc({ shard: String(shard) });
    this.#setState({ type: 'running' });
    return true;
  }

  /** #deadLetter, or false after logging why it failed (the caller's loop tries again). */
  async #tryDeadLetter(message: InboundMessage, reason: string, signal: AbortSignal): Promise<boolean> {
    try {
      await this.#deadLetter(message, reason);
      return true;
    } catch (err) {
      if (signal.aborted) return false;
      const { shard } = this.options;
      this.#deps.logger.warn(
        { shard, seq: message.seq, err: errorMessage(err) },
        'moving a message to the dead letters failed; retrying',
      );
      await this.#retry.waitFor(1000, signal);
      return false;
    }
  }

  /**
   * Moves a message at the head of the buffer to the dead letters from here (the worker
   * could not judge it), counted and logged like the worker's own, and the position moves past it.
   */
  async #deadLetter(message: InboundMessage, reason: string): Promise<void> {
    const { shard } = this.options;
    await this.#deps.writer.run(() => this.#deps.pool.deadLetter(shard, message, reason));
    this.#deps.metrics.deadLetters.inc({ shard: String(shard) });
    this.deadLetters++;
    this.#deps.logger.error(
      { shard, seq: message.seq, reason },
      'message can never apply; moved to the dead letters',
    );
    this.#advanceTo(message.seq);
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
