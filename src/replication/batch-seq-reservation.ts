import { JetStreamApiCodes, JetStreamApiError, type JetStreamManager } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';

export interface BatchSeqReservationOptions {
  /**
   * Opens (creating when missing) the cluster bucket (`clusterBucket()` in nats/naming.ts); called
   * again after a write failed, so a bucket lost with a wiped JetStream store is made anew.
   */
  readonly openBucket: () => Promise<KV>;
  readonly nodeId: number;
  /**
   * How far past a needed seq a reservation reaches, so the record is written
   * rarely: seqs follow the clock in microseconds, 60e6 is a minute of them.
   */
  readonly aheadSeqs?: number;
}

/** Thrown when the record holds something that is not a sequence (never written by us). */
export class BatchSeqRecordError extends Error {
  override readonly name = 'BatchSeqRecordError';
  readonly code = 'ERR_BATCH_SEQ_RECORD';
}

const DEFAULT_AHEAD = 60_000_000;

const recordKey = (nodeId: number): string => `seq.${nodeId}`;

/**
 * Reads any node's record in the cluster bucket `bucket` (for receivers, see
 * origin-seq-ceiling.ts): undefined when it has none or it holds no sequence.
 * No bucket counts as no record. Read from the bucket's stream leader, not a possibly lagging replica: the
 * publisher's write was acknowledged before the batch it covers was published.
 */
export function reservedSeqReader(
  jsm: JetStreamManager,
  bucket: string,
): (nodeId: number) => Promise<number | undefined> {
  return async (nodeId) => {
    let m;
    try {
      m = await jsm.streams.getMessage(`KV_${bucket}`, {
        last_by_subj: `$KV.${bucket}.${recordKey(nodeId)}`,
      });
    } catch (err) {
      // A wiped store: the bucket comes back with the next reservation.
      if (err instanceof JetStreamApiError && err.code === JetStreamApiCodes.StreamNotFound) return undefined;
      throw err;
    }
    const op = m?.header?.get('KV-Operation');
    if (m === null || (op !== undefined && op !== '' && op !== 'PUT')) return undefined;
    const v = Number(m.string());
    return Number.isSafeInteger(v) && v >= 0 ? v : undefined;
  };
}

/**
 * The highest batch sequence this node may have used, kept in the cluster KV
 * bucket under `seq.<node id>` and raised before any seq above it is used.
 * Receivers drop a batch at or below the highest seq they applied from its
 * origin and shard, so a node's seqs must never go backwards (design.md,
 * invariant 10); the clock alone (microseconds) fails when it was ahead and is
 * corrected, and the node's own record (the outbox) is gone after `-cleanup`
 * or with a new database file. The KV record survives both: a node starts
 * above it whatever its clock and local state say. Written before publishing
 * (`reserve`), a block ahead, so the hot path rarely waits for it.
 */
export class BatchSeqReservation {
  readonly #o: BatchSeqReservationOptions;
  readonly #key: string;
  #reserved = 0;
  #revision = 0;
  #pending: Promise<void> = Promise.resolve();
  #kv: KV | undefined;

  constructor(options: BatchSeqReservationOptions) {
    this.#o = options;
    this.#key = recordKey(options.nodeId);
  }

  /** Reads the record: the seq above which this node starts (0 when none was ever reserved). */
  async load(): Promise<number> {
    this.#kv ??= await this.#o.openBucket();
    const e = await this.#kv.get(this.#key);
    if (e === null || e.operation !== 'PUT') {
      this.#revision = 0; // created by the next reservation
      return this.#reserved;
    }
    const v = Number(e.string());
    if (!Number.isSafeInteger(v) || v < 0)
      throw new BatchSeqRecordError(
        `the batch sequence record ${this.#key} holds ${JSON.stringify(e.string())}, not a sequence`,
      );
    this.#reserved = v;
    this.#revision = e.revision;
    return v;
  }

  /** The highest seq reserved so far. */
  get reserved(): number {
    return this.#reserved;
  }

  /**
   * Resolves once `seq` is covered by the record. Calls are serialized: shards
   * reserve concurrently, and the record only ever grows (compare-and-set on
   * its revision; a lost race reads the record again).
   */
  reserve(seq: number): Promise<void> {
    if (seq <= this.#reserved) return Promise.resolve();
    const run = this.#pending.then(() => this.#raise(seq));
    this.#pending = run.catch(() => undefined);
    return run;
  }

  async #raise(seq: number): Promise<void> {
    for (let attempt = 0; seq > this.#reserved; attempt++) {
      const target = seq + (this.#o.aheadSeqs ?? DEFAULT_AHEAD);
      try {
        const kv = (this.#kv ??= await this.#o.openBucket());
        this.#revision =
          this.#revision === 0
            ? await kv.create(this.#key, String(target))
            : await kv.update(this.#key, String(target), this.#revision);
        this.#reserved = target;
      } catch (err) {
        // Someone wrote the record since we read it (another start of this node id, refused by the
        // node registry, or a purge), or the bucket is gone (a wiped store): open it again, read the
        // record and retry above what it holds (the clock keeps seqs above a lost record's).
        if (attempt >= 3) throw err;
        this.#kv = undefined;
        const reserved = this.#reserved;
        await this.load();
        this.#reserved = Math.max(reserved, this.#reserved);
      }
    }
  }
}
