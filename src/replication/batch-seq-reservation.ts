import type { KV } from '@nats-io/kv';

export interface BatchSeqReservationOptions {
  /** The cluster bucket (`clusterBucket()` in nats/naming.ts), opened by the caller. */
  readonly kv: KV;
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

  constructor(options: BatchSeqReservationOptions) {
    this.#o = options;
    this.#key = `seq.${options.nodeId}`;
  }

  /** Reads the record: the seq above which this node starts (0 when none was ever reserved). */
  async load(): Promise<number> {
    const e = await this.#o.kv.get(this.#key);
    if (e === null || e.operation !== 'PUT') return 0;
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
    const { kv } = this.#o;
    for (let attempt = 0; seq > this.#reserved; attempt++) {
      const target = seq + (this.#o.aheadSeqs ?? DEFAULT_AHEAD);
      try {
        this.#revision =
          this.#revision === 0
            ? await kv.create(this.#key, String(target))
            : await kv.update(this.#key, String(target), this.#revision);
        this.#reserved = target;
      } catch (err) {
        // Someone wrote the record since we read it (another start of this node id, refused by the
        // node registry, or a purge): read it again and retry above what it holds.
        if (attempt >= 3) throw err;
        await this.load();
        if (this.#reserved === 0) this.#revision = 0;
      }
    }
  }
}
