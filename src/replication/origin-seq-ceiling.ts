import type { BatchId } from './msg-id.ts';

/**
 * Reads the batch seq an origin has reserved (`seq.<node id>` in the cluster
 * bucket, batch-seq-reservation.ts): a number, or undefined when the origin
 * has no record.
 */
export type ReservedSeqReader = (origin: number) => Promise<number | undefined>;

/**
 * Refuses a batch whose seq is beyond what its origin has reserved. A
 * publisher raises its record in the cluster bucket before it uses a seq above
 * it, so a higher seq was never published by that node: applied, it would
 * move the origin's stored sequence past every real batch to come, and those
 * would be dropped as duplicates (a node silenced). The ceilings are cached and
 * only grow (so is the record); the record is read again only when a seq
 * passes the cached one, about once per reserved block.
 *
 * An origin with no record is not judged: a record is written before the first
 * publish and only a wiped JetStream store loses it, and then the origin's
 * batches must keep applying. Whoever may write the bucket may raise a record;
 * see docs/threat-model.md.
 */
export class OriginSeqCeiling {
  readonly #read: ReservedSeqReader;
  readonly #ceilings = new Map<number, number>();

  constructor(read: ReservedSeqReader) {
    this.#read = read;
  }

  /** Undefined when `id.seq` is within the origin's reservation, else why the batch is refused. */
  async refusal(id: BatchId): Promise<string | undefined> {
    const cached = this.#ceilings.get(id.origin);
    if (cached !== undefined && id.seq <= cached) return undefined;
    const reserved = await this.#read(id.origin);
    if (reserved === undefined) return undefined;
    this.#ceilings.set(id.origin, Math.max(reserved, cached ?? 0));
    if (id.seq <= reserved) return undefined;
    return `origin seq beyond reservation: node ${id.origin} has reserved batch seqs up to ${reserved}, the batch names ${id.seq}`;
  }
}
