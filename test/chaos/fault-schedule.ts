/**
 * The seeded fault schedule of a chaos run: which fault comes next, on which
 * target, for how long. It draws from its own random sequence, so the same
 * seed gives the same schedule whatever the writers did meanwhile.
 */
import { mulberry32 } from '../helpers/prng.ts';

export const FAULTS = [
  'kill-node',
  'kill-server',
  'pause-node',
  'pause-server',
  'partition-node',
  /** A node stopped while the streams discard its history: it restores a snapshot at restart, under load. */
  'snapshot-restore',
  /** The snapshot store or temp dir fills up: saves fail clearly, replication goes on, a later save succeeds. */
  'full-snapshot-disk',
  /** Forged and oversized messages from a plain client: dead-lettered on every node, nothing else changes. */
  'hostile-publisher',
] as const;
export type FaultKind = (typeof FAULTS)[number];

/**
 * Fault kinds dealt from shuffled decks: each deck holds every enabled kind
 * once, so any run with as many faults as kinds exercises each of them
 * (`uncovered` says how many are still to come), and the order stays random.
 */
export class FaultSchedule {
  readonly rand: () => number;
  readonly #kinds: readonly FaultKind[];
  readonly #seen = new Set<FaultKind>();
  #deck: FaultKind[] = [];

  constructor(seed: number, kinds: readonly FaultKind[]) {
    if (kinds.length === 0) throw new Error('a fault schedule needs at least one fault kind');
    // Decorrelated from the writers, which draw from the seed itself.
    this.rand = mulberry32(Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1));
    this.#kinds = kinds;
  }

  next(): FaultKind {
    if (this.#deck.length === 0) {
      this.#deck = [...this.#kinds];
      for (let i = this.#deck.length - 1; i > 0; i--) {
        const j = Math.floor(this.rand() * (i + 1));
        [this.#deck[i], this.#deck[j]] = [this.#deck[j]!, this.#deck[i]!];
      }
    }
    const kind = this.#deck.pop()!;
    this.#seen.add(kind);
    return kind;
  }

  /** Enabled kinds not dealt yet. */
  get uncovered(): number {
    return this.#kinds.length - this.#seen.size;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.rand() * xs.length)]!;
  }

  /** A duration in [minMs, maxMs). */
  durationMs(minMs: number, maxMs: number): number {
    return minMs + Math.floor(this.rand() * (maxMs - minMs));
  }
}
