/**
 * A small seeded PRNG (mulberry32) for fuzz tests: every run prints its seed and
 * is reproduced exactly by running again with that seed (FUZZ_SEED=n).
 */
import { randomInt } from 'node:crypto';

export class SeededRandom {
  readonly seed: number;
  #state: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#state = this.seed;
  }

  /** The seed from FUZZ_SEED, else a fresh random one. */
  static fromEnv(): SeededRandom {
    const env = process.env.FUZZ_SEED;
    return new SeededRandom(env === undefined || env === '' ? randomInt(2 ** 31) : Number(env));
  }

  /** A uniform 32-bit unsigned integer. */
  uint32(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.uint32() / 2 ** 32;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /** An integer in [min, max]. */
  range(min: number, max: number): number {
    return min + this.int(max - min + 1);
  }

  chance(p: number): boolean {
    return this.float() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new RangeError('pick from an empty list');
    return items[this.int(items.length)]!;
  }

  /** Picks by weight: `[[weight, value], ...]`. */
  weighted<T>(choices: readonly (readonly [number, T])[]): T {
    const total = choices.reduce((s, [w]) => s + w, 0);
    let r = this.float() * total;
    for (const [w, v] of choices) {
      r -= w;
      if (r < 0) return v;
    }
    return choices[choices.length - 1]![1];
  }

  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.uint32() & 0xff;
    return out;
  }

  /** A size skewed towards small values: mostly < 64, sometimes up to `max`. */
  size(max: number): number {
    return this.chance(0.8) ? this.int(Math.min(64, max + 1)) : this.int(max + 1);
  }
}
