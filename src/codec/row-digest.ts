/**
 * Canonical bytes of a row key and a 64-bit hash of a row's values: what the
 * replicated-state index stores per row (docs/design.md, invariants 3 and 9).
 * Pure after initialisation (xxhash-wasm), so shard workers use it directly.
 *
 * Values are type-tagged (INTEGER, REAL, TEXT, BLOB, NULL), so 1, 1.0, '1' and
 * x'31' never collide. A row's hash covers its non-NULL columns by name in name
 * order: a column added with a NULL default leaves every hash as it was, and
 * two nodes whose tables list the columns in another order agree.
 */
import xxhash from 'xxhash-wasm';
import { SqlTextBytes, type SqlValue } from './sql-value.ts';

const TAG_NULL = 0x6e;
const TAG_INTEGER = 0x69;
const TAG_REAL = 0x72;
const TAG_TEXT = 0x74;
const TAG_BLOB = 0x62;

/** A value as hashed: as read, or TEXT carried as its bytes (hashed as SQLite's reader decodes it, like the row). */
export type DigestValue = SqlValue | SqlTextBytes;

/** How one key column compares: `nocase` keys are folded (ASCII, as SQLite's NOCASE) so one row has one key. */
export type KeyFold = 'binary' | 'nocase';

/** A table's columns in hashing order: `order[i]` is the index, in the caller's values, of the i-th column by name. */
export interface HashLayout {
  readonly names: readonly Buffer[];
  readonly order: readonly number[];
}

export function hashLayout(columns: readonly string[]): HashLayout {
  const order = columns.map((_, i) => i).sort((a, b) => (columns[a]! < columns[b]! ? -1 : 1));
  return { names: order.map((i) => Buffer.from(columns[i]!, 'utf8')), order };
}

function foldAscii(s: string): string {
  // SQLite's NOCASE folds ASCII letters only.
  return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
}

export class RowDigest {
  readonly #h64: (input: Uint8Array, seed?: bigint) => bigint;
  #buf = Buffer.allocUnsafe(64 * 1024);
  #pos = 0;

  private constructor(h64: (input: Uint8Array, seed?: bigint) => bigint) {
    this.#h64 = h64;
  }

  static async create(): Promise<RowDigest> {
    const { h64Raw } = await xxhash();
    return new RowDigest(h64Raw);
  }

  /** The canonical bytes of a key (a fresh buffer, safe to keep). */
  key(values: readonly DigestValue[], fold?: readonly KeyFold[]): Buffer {
    this.#pos = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i]!;
      this.#value(typeof v === 'string' && fold?.[i] === 'nocase' ? foldAscii(v) : v);
    }
    return Buffer.from(this.#buf.subarray(0, this.#pos));
  }

  /** The key values of canonical key bytes (`key`); NOCASE text comes back folded, which matches the same row. */
  decodeKey(bytes: Uint8Array): SqlValue[] {
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    const out: SqlValue[] = [];
    for (let pos = 0; pos < buf.length;) {
      const tag = buf[pos]!;
      const n = buf.readUInt32BE(pos + 1);
      const body = buf.subarray(pos + 5, pos + 5 + n);
      pos += 5 + n;
      if (tag === TAG_NULL) out.push(null);
      else if (tag === TAG_INTEGER) out.push(body.readBigInt64BE(0));
      else if (tag === TAG_REAL) out.push(body.readDoubleBE(0));
      else if (tag === TAG_TEXT) out.push(body.toString('utf8'));
      else out.push(Buffer.from(body));
    }
    return out;
  }

  /**
   * The hash of a row, as a signed 64-bit integer (SQLite's INTEGER): `values` in
   * the table's column order, `layout` from `hashLayout` of those columns.
   */
  hash(layout: HashLayout, values: readonly DigestValue[]): bigint {
    this.#pos = 0;
    const { names, order } = layout;
    for (let i = 0; i < order.length; i++) {
      const v = values[order[i]!];
      if (v === null || v === undefined) continue;
      this.#bytes(names[i]!);
      this.#value(v);
    }
    return BigInt.asIntN(64, this.#h64(this.#buf.subarray(0, this.#pos)));
  }

  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.#buf.length * 2, this.#pos + n));
    this.#buf.copy(next, 0, 0, this.#pos);
    this.#buf = next;
  }

  #head(tag: number, length: number): void {
    this.#room(5 + length);
    this.#buf[this.#pos] = tag;
    this.#buf.writeUInt32BE(length, this.#pos + 1);
    this.#pos += 5;
  }

  #bytes(b: Uint8Array): void {
    this.#head(TAG_BLOB, b.length);
    this.#buf.set(b, this.#pos);
    this.#pos += b.length;
  }

  #value(v: DigestValue): void {
    // Rows are read back with invalid UTF-8 replaced (better-sqlite3 decodes TEXT): the same here.
    if (v instanceof SqlTextBytes) v = Buffer.from(v.bytes).toString('utf8');
    if (v === null) {
      this.#head(TAG_NULL, 0);
    } else if (typeof v === 'bigint') {
      this.#head(TAG_INTEGER, 8);
      this.#buf.writeBigInt64BE(v, this.#pos);
      this.#pos += 8;
    } else if (typeof v === 'number') {
      this.#head(TAG_REAL, 8);
      this.#buf.writeDoubleBE(v, this.#pos);
      this.#pos += 8;
    } else if (typeof v === 'string') {
      const n = Buffer.byteLength(v, 'utf8');
      this.#head(TAG_TEXT, n);
      this.#pos += this.#buf.write(v, this.#pos, n, 'utf8');
    } else {
      this.#bytes(v);
    }
  }
}
