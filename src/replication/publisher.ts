import type { JetStreamClient } from '@nats-io/jetstream';
import { headers, type MsgHdrs } from '@nats-io/transport-node';
import type { ChangelogScanner, PendingChange } from '../changelog/changelog-scanner.ts';
import { Wakeup } from '../changelog/wakeup.ts';
import type { TableFilter } from '../cdc/table-filter.ts';
import { arrayHeaderBytes, compressBody, decodeBody, joinRecords } from '../codec/change-batch-codec.ts';
import { CHUNK_BYTES, ChangeRecordWriter } from '../codec/change-record-writer.ts';
import type { SqlValue } from '../codec/sql-value.ts';
import type { Logger } from '../logger.ts';
import type { Metrics } from '../metrics/metrics.ts';
import { shardNumbers, subjectName } from '../nats/naming.ts';
import { SIGNATURE_HEADER } from './batch-signature.ts';
import { formatMsgId } from './msg-id.ts';
import type { BatchSeqReservation } from './batch-seq-reservation.ts';
import type { ChangeRef, OutboxEntry, OutboxStore } from './outbox-store.ts';
import { BACKFILL_VERSION, type HybridClock } from './hybrid-clock.ts';
import type { ShardHasher } from './shard-hasher.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';
import { errorMessage } from '../error-message.ts';
import { isNoResponders } from '../nats/nats-errors.ts';

export interface PublisherOptions {
  readonly nodeId: number;
  readonly shards: number;
  readonly subjectPrefix: string;
  readonly compress: boolean;
  readonly scanMaxChanges: number;
  readonly maxBatchChanges: number;
  /** Tables routed by name only (`[replication_log] shard_by_table`); none when undefined. */
  readonly shardByTable?: TableFilter;
  /** Max CBOR bytes of one message (already resolved against the server's max_payload). */
  readonly maxBatchBytes: number;
  readonly publishTimeoutMs: number;
  /** Milliseconds since the epoch; batch seqs start from it. Default `Date.now` (tests move it). */
  readonly clock?: () => number;
}

export interface PublisherDeps {
  readonly scanner: ChangelogScanner;
  readonly outbox: OutboxStore;
  readonly writer: WriterQueue;
  readonly js: JetStreamClient;
  readonly hasher: ShardHasher;
  readonly logger: Logger;
  readonly metrics: Metrics;
  /** Versions each change as it is read for publishing (invariant 3). */
  readonly clock: HybridClock;
  /** The cluster-wide floor of this node's batch seqs; none: the clock and the outbox alone. */
  readonly seqs?: BatchSeqReservation;
  /** Signs a batch (its id and payload): the value of the SIGNATURE_HEADER it is published with. */
  readonly sign?: (msgId: string, payload: Uint8Array) => string;
}

/**
 * A change waiting to be published: its record encoded once when it was read
 * (`encodeRecord`), so the queue holds bytes, not row objects (fewer objects
 * surviving into the old generation: less GC work and a lower peak RSS).
 */
interface QueuedChange extends ChangeRef {
  /** Primary-key values, for the refusal log (routing is decided when read). */
  readonly key: readonly SqlValue[];
  readonly record: Uint8Array;
}

interface InFlight {
  readonly entry: OutboxEntry;
  readonly changes: QueuedChange[];
  readonly msgId: string;
}

interface ShardState {
  readonly shard: number;
  readonly queue: QueuedChange[];
  /** New changes queued (scan loop) or the step may go on. */
  readonly wakeup: Wakeup;
  /** Cuts a failed publish's backoff short: only when NATS reconnects (see retryNow). */
  readonly retry: Wakeup;
  lastSeq: number;
  inFlight: InFlight | undefined;
}

/** The batch's signature header; deterministic (Ed25519), so a retry sends the same one. */
function signatureHeaders(sign: (msgId: string, payload: Uint8Array) => string, f: InFlight): MsgHdrs {
  const h = headers();
  h.set(SIGNATURE_HEADER, sign(f.msgId, f.entry.payload));
  return h;
}

/** Identity of a change across a restart: its table and its id in that table's change log. */
function memberKey(table: string, changeId: number): string {
  return `${changeId}\u0000${table}`;
}

/**
 * Scanning pauses while this many full batches of scanned changes wait in memory (or one
 * per shard, if more: a shard's next batch may then be partial). Changes that wait longer
 * outlive V8's young generation and are collected only by a full GC: with room for
 * 10,000 (ten batches) a writer node's peak RSS (burst, then steady writes) was
 * 171-209 MB, with 3,000 144-164 (bench, shards 1, side by side).
 */
const HIGH_WATER_BATCHES = 3;
/**
 * Longest pause between retries of a failed publish. Short: an attempt is cheap, and after a
 * stream leader election (a clustered server restarted) the stream answers again within seconds.
 */
const MAX_BACKOFF_MS = 2000;
const NO_KEY: readonly SqlValue[] = [];

/**
 * Publishes pending changes: scans the change logs in global (commit) order,
 * routes each change to its shard, and per shard keeps at most one batch in
 * flight. A batch is persisted in the outbox before it is published and
 * retried byte-identically under the same Nats-Msg-Id until JetStream
 * acknowledges it; only then are its rows marked published (invariants 1, 2).
 * A NATS outage never stops the node: changes stay pending and publishing
 * resumes on reconnect.
 */
export class Publisher {
  readonly #deps: PublisherDeps;
  readonly #options: PublisherOptions;
  /** Writes each change's record straight from its change-log row (the same bytes as `encodeRecord`). */
  readonly #records: ChangeRecordWriter;
  readonly #shards: Map<number, ShardState>;
  readonly #now: () => number;
  readonly #scanWakeup = new Wakeup();
  readonly #space = new Wakeup();
  #queued = 0;
  /** Scanned changes that may wait in memory: HIGH_WATER_BATCHES full batches, or one per shard. */
  readonly #highWater: number;
  /** Resolves once batches in flight at the last stop have their changes back (shard loops wait for it). */
  #recovered: Promise<void> = Promise.resolve();
  #abort = new AbortController();
  #loops: Promise<void>[] = [];
  /** Time of the last PubAck, ms since the epoch (0 = none yet). */
  lastPublishAt = 0;
  /** Stream sequence of the last acknowledged batch, per shard: how far the others must apply to hold it. */
  readonly ackedSeq = new Map<number, number>();

  constructor(deps: PublisherDeps, options: PublisherOptions) {
    this.#deps = deps;
    this.#options = options;
    this.#records = new ChangeRecordWriter(options.nodeId);
    this.#now = options.clock ?? Date.now;
    this.#highWater = Math.max(HIGH_WATER_BATCHES, options.shards) * options.maxBatchChanges;
    this.#shards = new Map(
      shardNumbers(options.shards).map((shard) => [
        shard,
        { shard, queue: [], wakeup: new Wakeup(), retry: new Wakeup(), lastSeq: 0, inFlight: undefined },
      ]),
    );
  }

  /** Something may have changed in the change logs. */
  wake(): void {
    this.#scanWakeup.notify();
  }

  /** NATS is back: retry failed publishes now instead of at the end of their backoff. */
  retryNow(): void {
    for (const s of this.#shards.values()) s.retry.notify();
  }

  /**
   * Publishes records encoded elsewhere in the shard's next batch, under this
   * node's batch seqs and signature: verify's repair re-publishes a change with
   * its original version and origin, so last writer wins settles it everywhere
   * as it did where it applied. Change id 0 marks no change-log row.
   */
  enqueueRecords(table: string, items: readonly { key: readonly SqlValue[]; record: Uint8Array }[]): void {
    for (const { key, record } of items) {
      const k = this.#options.shardByTable?.accepts(table) ? NO_KEY : key;
      const s = this.#shards.get(this.#deps.hasher(table, k) + 1)!;
      // The last global id already queued: a recovery after a crash scans as far as it did without these.
      const globalId = s.queue.at(-1)?.globalId ?? s.inFlight?.entry.lastGlobalId ?? 0;
      s.queue.push({ globalId, table, changeId: 0, key, record });
      this.#queued++;
      s.wakeup.notify();
    }
  }

  /** Changes scanned and not yet acknowledged. */
  get inMemory(): number {
    return this.#queued;
  }

  async open(): Promise<void> {
    const { outbox, seqs } = this.#deps;
    // Seqs continue above the highest this node ever reserved, whatever its clock and database say.
    const floor = (await seqs?.load()) ?? 0;
    const { lastSeq, inFlight } = await this.#deps.writer.run(() => outbox.load());
    for (const s of this.#shards.values()) s.lastSeq = Math.max(floor, lastSeq.get(s.shard) ?? 0);
    // A block reserved now, while NATS answers: batches persisted during an outage do not wait for it.
    await seqs?.reserve(
      Math.max(floor + 1, ...[...this.#shards.values()].map((s) => s.lastSeq + 1), this.#now() * 1000),
    );
    // Batches in flight when the node stopped (crash, kill -9): the payload is re-published as it was,
    // under the same Nats-Msg-Id, so its changes must be exactly those in it. They are known by
    // decoding it (table and change id of each record), not by routing: after a change of the shard
    // count a change may hash elsewhere, and marking a change published with a batch that does not
    // carry it would lose it (invariant 1). Its changes are collected by scanning up to its last
    // global id before any shard publishes anything.
    const recovering = new Map<string, InFlight>();
    for (const entry of inFlight) {
      const s = this.#shards.get(entry.shard);
      if (s === undefined) continue; // shard count lowered: the changes are re-routed by the scan
      let members: string[];
      try {
        members = decodeBody(entry.payload).map((r) => memberKey(r.Payload.TableName, r.Payload.Id));
      } catch (err) {
        // Never expected (we encoded it); without its contents it cannot be matched, so publish the changes anew.
        this.#deps.logger.error(
          { shard: entry.shard, seq: entry.seq, err: errorMessage(err) },
          'the batch in flight at the last stop cannot be decoded; its changes are published in a new batch',
        );
        continue;
      }
      const f: InFlight = {
        entry,
        changes: [],
        msgId: formatMsgId({ origin: this.#options.nodeId, shard: entry.shard, seq: entry.seq }),
      };
      s.inFlight = f;
      for (const m of members) recovering.set(m, f);
      this.#deps.logger.info(
        { shard: entry.shard, msg_id: f.msgId, changes: members.length },
        'resuming the batch in flight at the last stop',
      );
    }
    const signal = this.#abort.signal;
    let recovered!: () => void;
    this.#recovered = new Promise<void>((r) => (recovered = r));
    this.#loops = [
      this.#scanLoop(signal, recovering, recovered),
      ...[...this.#shards.values()].map((s) => this.#shardLoop(s, signal)),
    ];
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await Promise.allSettled(this.#loops);
    this.#loops = [];
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #scanLoop(
    signal: AbortSignal,
    recovering: Map<string, InFlight>,
    recovered: () => void,
  ): Promise<void> {
    const { scanner, hasher, logger, metrics, writer, outbox } = this.#deps;
    let cursor = 0;
    let recoverUpTo = Math.max(0, ...[...recovering.values()].map((f) => f.entry.lastGlobalId));
    if (recoverUpTo === 0) recovered();
    while (!signal.aborted) {
      try {
        // No pause while recovering: the shard loops (which make space) wait for the recovery.
        if (this.#queued >= this.#highWater && recoverUpTo === 0) {
          await this.#space.wait(signal);
          continue;
        }
        const t0 = performance.now();
        const res = scanner.scan(cursor, this.#options.scanMaxChanges);
        metrics.scanChanges.observe((performance.now() - t0) / 1000);
        if (res.orphans.length > 0) {
          logger.warn({ count: res.orphans.length }, 'dropping pending changes of tables no longer captured');
          await writer.run(() => outbox.dropOrphans(res.orphans));
        }
        // Every change is encoded and routed before any is queued: if one throws, the scan is retried
        // from the same cursor, and a change queued on the first attempt would go out twice.
        const routed = res.changes.map((pending) => {
          const change = this.#encodeChange(pending);
          const resumed =
            recovering.size > 0 ? recovering.get(memberKey(change.table, change.changeId)) : undefined;
          // Tables in shard_by_table hash on their name alone: all their rows share one stream.
          const key = this.#options.shardByTable?.accepts(change.table) ? NO_KEY : change.key;
          return { change, resumed, shard: resumed === undefined ? hasher(change.table, key) + 1 : 0 };
        });
        for (const { change, resumed, shard } of routed) {
          if (resumed !== undefined) resumed.changes.push(change);
          else this.#shards.get(shard)!.queue.push(change);
          this.#queued++;
        }
        cursor = res.lastGlobalId;
        if (recoverUpTo > 0 && (cursor >= recoverUpTo || res.changes.length + res.orphans.length === 0)) {
          recoverUpTo = 0;
          recovering.clear();
          recovered();
        }
        for (const s of this.#shards.values())
          if (s.queue.length > 0 || s.inFlight !== undefined) s.wakeup.notify();
        if (res.changes.length + res.orphans.length < this.#options.scanMaxChanges && recoverUpTo === 0) {
          const t1 = performance.now();
          metrics.pendingPublish.set(scanner.countPending());
          metrics.countChanges.observe((performance.now() - t1) / 1000);
          await this.#scanWakeup.wait(signal);
        }
      } catch (err) {
        if (signal.aborted) return;
        logger.error({ err }, 'scanning change logs failed; retrying');
        await this.#scanWakeup.waitFor(1000, signal);
      }
    }
  }

  #encodeChange(c: PendingChange): QueuedChange {
    // Versioned now, not in the trigger: capture stays cheap, and the version is newer than every
    // change this node applied before the write was read. A backfilled row (created_at 0) gets the
    // lowest version: it never overwrites a change any node made.
    const version = c.createdAt === 0 ? BACKFILL_VERSION : this.#deps.clock.next();
    let bytes = this.#records.write(
      c.layout,
      c.changeId,
      c.type,
      c.values,
      c.createdAt,
      version,
      c.valuesFrom,
    );
    // A view into the writer's 64 KB chunk, or into a chunk grown for this one large record:
    // that one is copied, so a queued change never keeps a large buffer alive.
    if (bytes.buffer.byteLength > CHUNK_BYTES) bytes = bytes.slice();
    return { globalId: c.globalId, table: c.table, changeId: c.changeId, key: c.key, record: bytes };
  }

  /**
   * The next batch of the shard queue: as many changes as fit in one message,
   * in order; a change too large for any message is refused (state 2). It
   * stays queued until the caller has persisted it (`#take`).
   */
  async #prepareBatch(s: ShardState): Promise<InFlight | undefined> {
    const { logger, metrics, writer, outbox } = this.#deps;
    const limit = this.#options.maxBatchBytes;
    for (;;) {
      const max = Math.min(s.queue.length, this.#options.maxBatchChanges);
      if (max === 0) return undefined;
      const first = s.queue[0]!;
      const alone = arrayHeaderBytes(1) + first.record.length;
      if (alone > limit) {
        logger.error(
          {
            table: first.table,
            key: first.key.map(String),
            bytes: alone,
            limit,
            change_id: first.changeId,
          },
          'Unable to publish: change is larger than the largest NATS message; kept in the change log with state 2',
        );
        await writer.run(() => outbox.refuse(first));
        metrics.publishRefused.inc({ shard: s.shard });
        s.queue.shift();
        this.#queued--;
        this.#space.notify(); // a scan paused at the high-water mark may go on
        continue;
      }
      // As many changes as fit in one message, in order (the header is counted for `max` items: at most 4 bytes over).
      let count = 0;
      let bytes = arrayHeaderBytes(max);
      while (count < max && bytes + s.queue[count]!.record.length <= limit)
        bytes += s.queue[count++]!.record.length;
      const changes = s.queue.slice(0, Math.max(count, 1));
      const cbor = joinRecords(changes.map((c) => c.record));
      // Compressed here, not in the shard's worker: zstd at level 3 costs ~0.4 µs per row, less than
      // a worker round trip, and the buffers it leaves behind in each worker's heap until that
      // worker's next GC took 160 MB of RSS at 8 shards (measured, bench).
      const payload = this.#options.compress ? compressBody(cbor, 3) : cbor;
      // Receivers drop batches at or below the highest seq they applied from this node and shard.
      // Microseconds since the epoch keep seqs increasing when this node's own records are gone
      // (-cleanup, a new database file) and so is the cluster's (a wiped JetStream store); the
      // reservation keeps them increasing when the clock went backwards.
      const seq = Math.max(s.lastSeq + 1, this.#now() * 1000);
      await this.#deps.seqs?.reserve(seq);
      const entry: OutboxEntry = {
        shard: s.shard,
        seq,
        lastGlobalId: changes[changes.length - 1]!.globalId,
        payload,
      };
      return { entry, changes, msgId: formatMsgId({ origin: this.#options.nodeId, shard: s.shard, seq }) };
    }
  }

  /**
   * A prepared batch was persisted in the outbox: it leaves the queue and is the
   * shard's batch in flight. Not before: if compressing or persisting throws
   * (SQLITE_BUSY, a worker error), its changes stay queued for the retry; the scan
   * cursor has passed them and would never read them again before a restart.
   */
  #take(s: ShardState, batch: InFlight): InFlight {
    s.queue.splice(0, batch.changes.length);
    s.lastSeq = batch.entry.seq;
    s.inFlight = batch;
    return batch;
  }

  async #shardLoop(s: ShardState, signal: AbortSignal): Promise<void> {
    const { js, logger, metrics, outbox } = this.#deps;
    const subject = subjectName(this.#options.subjectPrefix, s.shard);
    let backoffMs = 100;
    await Promise.race([
      this.#recovered,
      new Promise((r) => signal.addEventListener('abort', r, { once: true })),
    ]);
    while (!signal.aborted) {
      try {
        let f = s.inFlight;
        if (f === undefined) {
          const batch = await this.#prepareBatch(s);
          if (batch === undefined) {
            await s.wakeup.wait(signal);
            continue;
          }
          await outbox.persist(batch.entry);
          f = this.#take(s, batch);
        }
        const t0 = performance.now();
        const publishing = js.publish(subject, f.entry.payload, {
          msgID: f.msgId,
          timeout: this.#options.publishTimeoutMs,
          ...(this.#deps.sign === undefined ? {} : { headers: signatureHeaders(this.#deps.sign, f) }),
        });
        // The next batch is encoded while this one waits for its PubAck (after the publish was sent).
        const ahead = this.#prepareBatch(s).then(
          (batch) => ({ batch }),
          (err: unknown) => ({ err }),
        );
        try {
          this.ackedSeq.set(s.shard, (await publishing).seq);
        } catch (err) {
          if (signal.aborted) return;
          metrics.publishFailures.inc({ shard: s.shard });
          metrics.publishRetries.inc({ shard: s.shard });
          logger.warn(
            {
              shard: s.shard,
              msg_id: f.msgId,
              changes: f.changes.length,
              err: errorMessage(err),
              ...(isNoResponders(err)
                ? { hint: 'no stream leader answered: JetStream is unavailable or electing a leader' }
                : {}),
            },
            'Unable to publish',
          );
          await ahead; // unused: prepared again after the retry
          // Not s.wakeup: the scan loop notifies it on every write, which would turn the backoff into a busy loop.
          await s.retry.waitFor(backoffMs, signal);
          backoffMs = Math.min(backoffMs * 2, MAX_BACKOFF_MS);
          continue;
        }
        backoffMs = 100;
        metrics.publishLatency.observe({ shard: s.shard }, (performance.now() - t0) / 1000);
        metrics.publishBatchSize.observe({ shard: s.shard }, f.changes.length);
        // The next batch is persisted in the transaction that marks this one published. Failing to
        // prepare it never holds this one back: it is marked alone, and the error retried after.
        let next: InFlight | undefined;
        let prepareError: unknown;
        try {
          const prepared = await ahead;
          next = 'batch' in prepared ? prepared.batch : await this.#prepareBatch(s);
          // Changes queued while this one was in flight: a fuller batch is worth encoding again.
          if (
            next === undefined
              ? s.queue.length > 0
              : next.changes.length < this.#options.maxBatchChanges &&
                s.queue.length >= 2 * next.changes.length
          )
            next = await this.#prepareBatch(s);
        } catch (err) {
          next = undefined;
          prepareError = err;
        }
        await outbox.commit(s.shard, f.changes, next?.entry);
        metrics.published.inc(f.changes.length);
        this.lastPublishAt = Date.now();
        s.inFlight = undefined;
        if (next !== undefined) this.#take(s, next);
        this.#queued -= f.changes.length;
        this.#space.notify();
        if (prepareError !== undefined) throw prepareError;
      } catch (err) {
        if (signal.aborted) return;
        logger.error({ shard: s.shard, err }, 'publisher step failed; retrying');
        await s.retry.waitFor(1000, signal);
      }
    }
  }
}
