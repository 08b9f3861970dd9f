/**
 * A minimal CBOR writer for fuzz tests: it encodes whatever shape it is given,
 * including ones a real encoder refuses or normalises (undefined, simple values,
 * arbitrary tags, lengths that lie, indefinite-length arrays), so the decoder
 * under test sees exactly the bytes the test means. Independent of cbor-x.
 */
import { SqlReal } from '../../src/codec/sql-value.ts';

/** Bytes written as they are, anywhere in a structure. */
export class RawCbor {
  constructor(readonly bytes: Uint8Array) {}
}

/** A tagged item: tag number + content. */
export class TaggedCbor {
  constructor(
    readonly tag: number | bigint,
    readonly value: unknown,
  ) {}
}

/** An array written with indefinite length (0x9f ... 0xff). */
export class IndefiniteArray {
  constructor(readonly items: readonly unknown[]) {}
}

/** The tag of SqlReal in src/codec/change-batch-codec.ts. */
export const SQL_REAL_TAG = 40_611;

/** The head of a data item: major type and argument (length, value or tag). */
export function cborHead(major: number, n: number | bigint): number[] {
  const m = major << 5;
  const v = BigInt(n);
  if (v < 24n) return [m | Number(v)];
  if (v < 0x100n) return [m | 24, Number(v)];
  if (v < 0x10000n) return [m | 25, Number(v >> 8n), Number(v & 0xffn)];
  if (v < 0x100000000n) {
    return [m | 26, ...[24n, 16n, 8n, 0n].map((s) => Number((v >> s) & 0xffn))];
  }
  return [m | 27, ...[56n, 48n, 40n, 32n, 24n, 16n, 8n, 0n].map((s) => Number((v >> s) & 0xffn))];
}

function float64(v: number): Uint8Array {
  const b = new Uint8Array(9);
  b[0] = 0xfb;
  new DataView(b.buffer).setFloat64(1, v);
  return b;
}

const head = (major: number, n: number | bigint): Uint8Array => Uint8Array.from(cborHead(major, n));
const byte = (b: number): Uint8Array => Uint8Array.of(b);
const utf8 = new TextEncoder();

function write(v: unknown, out: Uint8Array[]): void {
  if (v instanceof RawCbor) out.push(v.bytes);
  else if (v instanceof TaggedCbor) {
    out.push(head(6, v.tag));
    write(v.value, out);
  } else if (v instanceof IndefiniteArray) {
    out.push(byte(0x9f));
    for (const item of v.items) write(item, out);
    out.push(byte(0xff));
  } else if (v instanceof SqlReal) {
    out.push(head(6, SQL_REAL_TAG), float64(v.value));
  } else if (v === null) out.push(byte(0xf6));
  else if (v === undefined) out.push(byte(0xf7));
  else if (v === false) out.push(byte(0xf4));
  else if (v === true) out.push(byte(0xf5));
  else if (typeof v === 'number') {
    if (Number.isSafeInteger(v)) out.push(v >= 0 ? head(0, v) : head(1, -1 - v));
    else out.push(float64(v));
  } else if (typeof v === 'bigint') {
    out.push(v >= 0n ? head(0, v) : head(1, -1n - v));
  } else if (typeof v === 'string') {
    const bytes = utf8.encode(v);
    out.push(head(3, bytes.length), bytes);
  } else if (v instanceof Uint8Array) {
    out.push(head(2, v.length), v);
  } else if (Array.isArray(v)) {
    out.push(head(4, v.length));
    for (const item of v) write(item, out);
  } else if (typeof v === 'object') {
    const entries = Object.entries(v);
    out.push(head(5, entries.length));
    for (const [k, item] of entries) {
      write(k, out);
      write(item, out);
    }
  } else {
    throw new TypeError(`cbor-writer: cannot write ${typeof v}`);
  }
}

/** Encodes `v` as CBOR, exactly as shaped. */
export function writeCbor(v: unknown): Uint8Array {
  const out: Uint8Array[] = [];
  write(v, out);
  return Buffer.concat(out);
}
