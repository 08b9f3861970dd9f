/**
 * A bounded walk over CBOR bytes, before cbor-x turns them into objects
 * (invariant 5: a bad message never stops a node). Decoding costs memory per
 * item, not per byte: a 2 KB zstd message that inflates to 64 MiB of empty maps
 * (one byte each) decodes into 64 million objects, gigabytes of heap. The walk
 * allocates nothing and refuses such a message in linear time. Pure.
 */
import { MalformedMessageError } from './change-record.ts';

export interface CborLimits {
  /** Nesting of arrays, maps, tags and chunked strings. */
  readonly maxDepth: number;
  /** Data items of every kind. */
  readonly maxItems: number;
  /** Items that decode into a heap object: arrays, maps, byte strings and tags. */
  readonly maxObjects: number;
}

/**
 * A change batch is an array of records (3 maps each) whose values are scalars
 * (a BLOB is a byte string, an integral REAL a tag): depth 6, and at the default
 * `max_batch_changes` (1000) and SQLite's default column limit (2000) at most
 * about 4 million items, 2 million of them objects. Measured: 1 million empty
 * maps took ~100 MB of a worker's heap.
 */
export const CBOR_LIMITS: CborLimits = { maxDepth: 16, maxItems: 4_194_304, maxObjects: 2_097_152 };

/** Open containers hold their remaining items; an indefinite-length one holds -1 until its break. */
const INDEFINITE = -1;

/** Throws MalformedMessageError when the first CBOR item of `b` is truncated or exceeds `limits`. */
export function checkCborLimits(b: Uint8Array, limits: CborLimits = CBOR_LIMITS): void {
  const open: number[] = [];
  const end = b.length;
  let pos = 0;
  let items = 0;
  let objects = 0;
  const truncated = (): never => {
    throw new MalformedMessageError(`truncated CBOR at byte ${pos}`);
  };
  /** The item just read is complete: count it in its container, closing those it fills. */
  const completed = (): boolean => {
    while (open.length > 0) {
      const top = open[open.length - 1]!;
      if (top === INDEFINITE) return false;
      if (top > 1) {
        open[open.length - 1] = top - 1;
        return false;
      }
      open.pop();
    }
    return true;
  };
  const enter = (count: number): void => {
    if (open.length >= limits.maxDepth)
      throw new MalformedMessageError(`CBOR nested deeper than ${limits.maxDepth}`);
    open.push(count);
  };
  for (;;) {
    if (pos >= end) truncated();
    const initial = b[pos++]!;
    const major = initial >> 5;
    const info = initial & 31;
    if (initial === 0xff) {
      if (open[open.length - 1] !== INDEFINITE)
        throw new MalformedMessageError(`stray CBOR break at byte ${pos - 1}`);
      open.pop();
      if (completed()) return;
      continue;
    }
    if (++items > limits.maxItems)
      throw new MalformedMessageError(`CBOR holds more than ${limits.maxItems} items`);
    let arg = info;
    if (info >= 24 && info <= 27) {
      const size = 1 << (info - 24);
      if (pos + size > end) truncated();
      arg = 0;
      for (let i = 0; i < size; i++) arg = arg * 256 + b[pos++]!;
    } else if (info >= 28 && (info !== 31 || major < 2 || major === 6)) {
      throw new MalformedMessageError(`invalid CBOR header byte 0x${initial.toString(16)} at ${pos - 1}`);
    }
    const indefinite = info === 31;
    if (major === 2 || major === 4 || major === 5 || major === 6) {
      if (++objects > limits.maxObjects)
        throw new MalformedMessageError(
          `CBOR holds more than ${limits.maxObjects} arrays, maps, byte strings and tags`,
        );
    }
    if (major === 2 || major === 3) {
      if (indefinite) {
        enter(INDEFINITE);
        continue;
      }
      if (arg > end - pos) truncated();
      pos += arg;
    } else if (major === 4 || major === 5) {
      if (indefinite) {
        enter(INDEFINITE);
        continue;
      }
      // Every entry takes at least a byte: a length beyond the bytes left is a lie, refused before any allocation.
      const entries = major === 5 ? arg * 2 : arg;
      if (entries > end - pos)
        throw new MalformedMessageError(`CBOR container declares ${entries} items in ${end - pos} bytes`);
      if (entries > 0) {
        enter(entries);
        continue;
      }
    } else if (major === 6) {
      enter(1);
      continue;
    }
    if (completed()) return;
  }
}
