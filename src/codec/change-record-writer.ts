/**
 * Writes one change record as CBOR straight from a change-log row, without the
 * row objects `encodeRecord` needs: the publisher's hot path (one record per
 * captured row). The bytes are exactly those of `encodeRecord` for the same
 * change (cbor-x with this codec's options: maps with a 16-bit count, integers
 * as cbor-x writes JS numbers, integral REALs tagged as `SqlReal`), which a
 * test checks over every storage class and edge value. Pure (no I/O).
 */
import type { ChangeType } from './change-record.ts';
import { SqlTextBytes, type CapturedValue } from './sql-value.ts';

/** CBOR tag of an integral REAL (`SQL_REAL_TAG` in change-batch-codec.ts). */
const SQL_REAL_TAG = 40_611;
/** CBOR tag of TEXT kept as bytes (`SQL_TEXT_BYTES_TAG` in change-batch-codec.ts). */
const SQL_TEXT_BYTES_TAG = 40_612;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);
const TWO_64 = 1n << 64n;
/** Records share chunks of this size (a larger one only for a record that does not fit). */
export const CHUNK_BYTES = 64 * 1024;

/** A table's constant parts: its name and its column keys, encoded once. */
export interface RecordLayout {
  readonly table: Uint8Array;
  /** The `Row` key and map header, then each column name (in `values` order). */
  readonly rowHead: Uint8Array;
  readonly columns: readonly Uint8Array[];
}

function text(s: string): Uint8Array {
  const body = Buffer.from(s, 'utf8');
  return Buffer.concat([head(3, body.length), body]);
}

/** Minimal CBOR head of major type `major` with argument `n` (n < 2^32). */
function head(major: number, n: number): Uint8Array {
  const m = major << 5;
  if (n < 24) return Uint8Array.of(m | n);
  if (n < 0x100) return Uint8Array.of(m | 24, n);
  if (n < 0x10000) return Uint8Array.of(m | 25, n >> 8, n & 0xff);
  const b = Buffer.alloc(5);
  b[0] = m | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

/** cbor-x's map header for objects: always a 16-bit count (0xb9). */
function mapHead(n: number): Uint8Array {
  return Uint8Array.of(0xb9, n >> 8, n & 0xff);
}

const TYPES: Record<ChangeType, Uint8Array> = {
  insert: text('insert'),
  update: text('update'),
  delete: text('delete'),
};
const PAYLOAD_HEAD = Buffer.concat([text('Payload'), mapHead(6), text('Id')]);
const TYPE_KEY = text('Type');
const TABLE_KEY = text('TableName');
const CREATED_KEY = text('CreatedAt');
const VERSION_KEY = text('Version');

export function recordLayout(table: string, columns: readonly string[]): RecordLayout {
  return {
    table: Buffer.concat([TABLE_KEY, text(table)]),
    rowHead: Buffer.concat([text('Row'), mapHead(columns.length)]),
    columns: columns.map(text),
  };
}

/**
 * Encodes records into one growing buffer; each `write` returns a view of its
 * record (valid until the writer is dropped: chunks are never reused).
 */
export class ChangeRecordWriter {
  readonly #prefix: Uint8Array;
  #buf = Buffer.allocUnsafeSlow(CHUNK_BYTES);
  #pos = 0;
  #start = 0;

  constructor(nodeId: number) {
    // {FromNodeId: <nodeId>, Payload: {Id: ... the same for every record of this node: written once, kept.
    this.#bytes(mapHead(2));
    this.#bytes(text('FromNodeId'));
    this.#number(nodeId);
    this.#bytes(PAYLOAD_HEAD);
    this.#prefix = Uint8Array.from(this.#buf.subarray(0, this.#pos));
    this.#pos = 0;
  }

  /** One record: `values` from index `from` on, in the layout's column order, as read with safe integers; `version` from the node's clock. */
  write(
    layout: RecordLayout,
    changeId: number,
    type: ChangeType,
    values: readonly CapturedValue[],
    createdAt: number,
    version: number,
    from = 0,
  ): Uint8Array {
    // A chunk grown for a large record is left to it: the next records start a normal one.
    if (this.#buf.length > CHUNK_BYTES) {
      this.#buf = Buffer.allocUnsafeSlow(CHUNK_BYTES);
      this.#pos = 0;
    }
    this.#start = this.#pos;
    this.#bytes(this.#prefix);
    this.#number(changeId);
    this.#bytes(TYPE_KEY);
    this.#bytes(TYPES[type]);
    this.#bytes(layout.table);
    this.#bytes(layout.rowHead);
    const columns = layout.columns;
    for (let i = 0; i < columns.length; i++) {
      this.#bytes(columns[i]!);
      this.#value(values[from + i]!);
    }
    this.#bytes(CREATED_KEY);
    this.#number(createdAt);
    this.#bytes(VERSION_KEY);
    this.#number(version);
    return this.#buf.subarray(this.#start, this.#pos);
  }

  /** Room for `n` more bytes; a new chunk carries the record begun so far. */
  #room(n: number): void {
    if (this.#pos + n <= this.#buf.length) return;
    const begun = this.#pos - this.#start;
    const next = Buffer.allocUnsafeSlow(Math.max(CHUNK_BYTES, (begun + n) * 2));
    this.#buf.copy(next, 0, this.#start, this.#pos);
    this.#buf = next;
    this.#start = 0;
    this.#pos = begun;
  }

  #bytes(b: Uint8Array): void {
    this.#room(b.length);
    this.#buf.set(b, this.#pos);
    this.#pos += b.length;
  }

  #byte(b: number): void {
    this.#room(1);
    this.#buf[this.#pos++] = b;
  }

  #head(major: number, n: number): void {
    this.#room(5);
    const m = major << 5;
    const buf = this.#buf;
    if (n < 24) {
      buf[this.#pos++] = m | n;
    } else if (n < 0x100) {
      buf[this.#pos++] = m | 24;
      buf[this.#pos++] = n;
    } else if (n < 0x10000) {
      buf[this.#pos++] = m | 25;
      buf[this.#pos++] = n >> 8;
      buf[this.#pos++] = n & 0xff;
    } else {
      buf[this.#pos++] = m | 26;
      buf.writeUInt32BE(n, this.#pos);
      this.#pos += 4;
    }
  }

  /** A JS number as cbor-x writes it: 32-bit integers minimal, anything else float64. */
  #number(v: number): void {
    if (v >>> 0 === v) {
      this.#head(0, v);
    } else if (v >> 0 === v) {
      this.#head(1, -1 - v);
    } else if (v < 0 && v >= -0x100000000 && Math.floor(v) === v) {
      this.#room(5);
      this.#buf[this.#pos++] = 0x3a;
      this.#buf.writeUInt32BE(-1 - v, this.#pos);
      this.#pos += 4;
    } else {
      this.#float64(v);
    }
  }

  #float64(v: number): void {
    this.#room(9);
    this.#buf[this.#pos++] = 0xfb;
    this.#buf.writeDoubleBE(v, this.#pos);
    this.#pos += 8;
  }

  /** A value read with safe integers, written as `toWire` then cbor-x would. */
  #value(v: CapturedValue): void {
    if (v === null) {
      this.#byte(0xf6);
    } else if (typeof v === 'bigint') {
      if (v <= MAX_SAFE && v >= MIN_SAFE) {
        this.#number(Number(v));
      } else {
        // Beyond 2^53 but within 64 bits (SQLite integers): major type 0 or 1, 8 bytes.
        this.#room(9);
        const negative = v < 0n;
        this.#buf[this.#pos++] = negative ? 0x3b : 0x1b;
        this.#buf.writeBigUInt64BE(negative ? -v - 1n : v % TWO_64, this.#pos);
        this.#pos += 8;
      }
    } else if (typeof v === 'number') {
      if (Number.isInteger(v) || Object.is(v, -0)) {
        // An integral REAL: tag SQL_REAL_TAG over the 8 bytes of the float64 (see SqlReal).
        this.#room(12);
        const buf = this.#buf;
        buf[this.#pos++] = 0xd9;
        buf[this.#pos++] = SQL_REAL_TAG >> 8;
        buf[this.#pos++] = SQL_REAL_TAG & 0xff;
        buf[this.#pos++] = 0x48;
        buf.writeDoubleBE(v, this.#pos);
        this.#pos += 8;
      } else {
        this.#float64(v);
      }
    } else if (typeof v === 'string') {
      const n = Buffer.byteLength(v, 'utf8');
      this.#head(3, n);
      this.#room(n);
      this.#pos += this.#buf.write(v, this.#pos, n, 'utf8');
    } else if (v instanceof SqlTextBytes) {
      this.#room(3);
      this.#buf[this.#pos++] = 0xd9;
      this.#buf[this.#pos++] = SQL_TEXT_BYTES_TAG >> 8;
      this.#buf[this.#pos++] = SQL_TEXT_BYTES_TAG & 0xff;
      this.#head(2, v.bytes.length);
      this.#bytes(v.bytes);
    } else {
      this.#head(2, v.length);
      this.#bytes(v);
    }
  }
}
