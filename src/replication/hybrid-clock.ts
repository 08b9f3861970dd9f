/**
 * The node's hybrid logical clock (docs/design.md, invariant 3). A version is
 * one safe integer: wall-clock milliseconds × 1000 plus a logical counter, so
 * it orders like time and still grows when the wall clock stalls or steps
 * back. Every remote version applied moves the clock past it, so a write made
 * after seeing a change always carries a newer version. Ties between nodes are
 * broken by the origin node id (see `newer`).
 *
 * The state is one shared 64-bit cell: the publisher (main thread) takes
 * versions, the shard workers observe remote ones.
 */

/** Versions per millisecond before the clock runs ahead of the wall clock. */
export const VERSIONS_PER_MS = 1000;
/** The version of backfilled rows: older than any write, so a backfill never overwrites or resurrects one. */
export const BACKFILL_VERSION = 0;

export class HybridClock {
  /** Shared memory: structured-cloned to the shard workers, who see the same cell. */
  readonly state: BigInt64Array;
  readonly #now: () => number;

  constructor(state?: BigInt64Array, now: () => number = Date.now) {
    this.state = state ?? new BigInt64Array(new SharedArrayBuffer(8));
    this.#now = now;
  }

  /** A new version, greater than every version taken or observed before. */
  next(): number {
    const wall = BigInt(this.#now() * VERSIONS_PER_MS);
    for (;;) {
      const seen = Atomics.load(this.state, 0);
      const v = seen + 1n > wall ? seen + 1n : wall;
      if (Atomics.compareExchange(this.state, 0, seen, v) === seen) return Number(v);
    }
  }

  /** A version seen elsewhere: later versions taken here are greater. Never moves the clock back. */
  observe(version: number): void {
    const v = BigInt(version);
    for (let seen = Atomics.load(this.state, 0); seen < v;) {
      const was = Atomics.compareExchange(this.state, 0, seen, v);
      if (was === seen) return;
      seen = was;
    }
  }

  /** How far `version` is ahead of this node's wall clock, ms (0 if not ahead). */
  aheadMs(version: number): number {
    return Math.max(0, Math.floor(version / VERSIONS_PER_MS) - this.#now());
  }
}

/** True when (version a, origin a) beats (version b, origin b): last writer wins, ties to the higher node id. */
export function newer(aVersion: number, aOrigin: number, bVersion: number, bOrigin: number): boolean {
  return aVersion > bVersion || (aVersion === bVersion && aOrigin > bOrigin);
}
