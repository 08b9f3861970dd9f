/**
 * The hash tree nodes exchange to prove they hold the same replicated state
 * (docs/design.md, "Verify"). Each key's entry (version, origin and the hash of
 * the row as the table holds it) hashes to 64 bits; keys fall into one of
 * LEAVES buckets by the top bits of a hash of their canonical bytes, so every
 * node puts a key in the same bucket whatever else it holds. A bucket's digest
 * is the sum (mod 2^64) of its entries' hashes and their count: independent of
 * order, so it is computed in one pass over the table. Inner nodes sum their
 * FANOUT children. Pure after initialisation (xxhash-wasm).
 */
import xxhash from 'xxhash-wasm';

/** Children per tree node. */
export const FANOUT = 16;
/** Levels below the root: FANOUT^DEPTH leaf buckets (4096: ~250 keys each at 1M rows). */
export const DEPTH = 3;
export const LEAVES = FANOUT ** DEPTH;
const MASK = (1n << 64n) - 1n;

/** One key's replicated state on one node. */
export interface KeyEntry {
  /** Canonical key bytes (RowDigest.key). */
  readonly pk: Buffer;
  /** The index's version and origin; -1 when the index has no entry (a row written behind capture). */
  readonly version: number;
  readonly origin: number;
  /** Hash of the row the table holds (RowDigest.hash), null when the table has no row for the key. */
  readonly value: bigint | null;
  /**
   * The table's row is not what the index says: a local write not yet versioned, or
   * one that escaped capture.
   */
  readonly unversioned: boolean;
}

/** Sum and count of a subtree. */
export interface Digest {
  sum: bigint;
  count: number;
}

export class DigestHasher {
  readonly #h64: (input: Uint8Array, seed?: bigint) => bigint;
  readonly #buf = Buffer.alloc(8 + 8 + 8 + 1);

  private constructor(h64: (input: Uint8Array, seed?: bigint) => bigint) {
    this.#h64 = h64;
  }

  static async create(): Promise<DigestHasher> {
    const { h64Raw } = await xxhash();
    return new DigestHasher(h64Raw);
  }

  /** The leaf bucket of a key, 0..LEAVES-1. */
  bucket(pk: Uint8Array): number {
    return Number(this.#h64(pk, 0x5eedn) >> BigInt(64 - 4 * DEPTH));
  }

  /** What a key contributes to its bucket's digest: every field that must agree. */
  entryHash(e: KeyEntry): bigint {
    const b = this.#buf;
    b.writeDoubleBE(e.version, 0);
    b.writeDoubleBE(e.origin, 8);
    b.writeBigInt64BE(e.value ?? 0n, 16);
    b[24] = e.value === null ? 0 : 1;
    return this.#h64(Buffer.concat([e.pk, b]));
  }
}

/** Adds an entry hash into a digest. */
export function addTo(d: Digest, h: bigint): void {
  d.sum = (d.sum + h) & MASK;
  d.count++;
}

export function emptyLeaves(): Digest[] {
  return Array.from({ length: LEAVES }, () => ({ sum: 0n, count: 0 }));
}

/**
 * The digests of the children of tree node `prefix` at `level` (0 = the root,
 * one node; level L has FANOUT^L nodes). Children are at level + 1.
 */
export function childDigests(leaves: readonly Digest[], level: number, prefix: number): Digest[] {
  const span = FANOUT ** (DEPTH - level - 1);
  const out: Digest[] = [];
  for (let c = 0; c < FANOUT; c++) {
    const first = (prefix * FANOUT + c) * span;
    const d = { sum: 0n, count: 0 };
    for (let i = first; i < first + span; i++) {
      d.sum = (d.sum + leaves[i]!.sum) & MASK;
      d.count += leaves[i]!.count;
    }
    out.push(d);
  }
  return out;
}

export function rootDigest(leaves: readonly Digest[]): Digest {
  const d = { sum: 0n, count: 0 };
  for (const l of leaves) {
    d.sum = (d.sum + l.sum) & MASK;
    d.count += l.count;
  }
  return d;
}
