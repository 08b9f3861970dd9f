/**
 * Message bodies: a CBOR array of change records, zstd-compressed when the
 * sender chose to. Compression is recognised by the zstd frame magic, which no
 * CBOR array starts with, so nodes with different `compress` settings interoperate.
 * Pure (no I/O): workers import this file directly.
 */
import { createRequire } from 'node:module';
import { addExtension, Encoder } from 'cbor-x';
import { compress } from 'zstd-napi';
import { MalformedMessageError, validateChangeBatch, type ChangeRecord } from './change-record.ts';
import { checkCborLimits } from './check-cbor-limits.ts';
import { SqlReal, SqlTextBytes } from './sql-value.ts';
import { errorMessage } from '../error-message.ts';

/** CBOR tag of an integral REAL (first-come-first-served range). */
const SQL_REAL_TAG = 40_611;
addExtension({
  Class: SqlReal,
  tag: SQL_REAL_TAG,
  // The 8 bytes of the float64, big-endian: CBOR encoders shorten integral floats (and -0.0)
  // to integers, which would lose the REAL's type or sign. A plain number is accepted too.
  encode: (v: SqlReal, encode: (x: unknown) => Uint8Array) => {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, v.value);
    return encode(bytes);
  },
  decode: (v: unknown) => {
    if (typeof v === 'number') return new SqlReal(v);
    if (v instanceof Uint8Array && v.length === 8)
      return new SqlReal(new DataView(v.buffer, v.byteOffset, 8).getFloat64(0));
    throw new MalformedMessageError('tagged REAL is not a float64');
  },
});

/** CBOR tag of TEXT that is not valid UTF-8, over its exact bytes (see SqlTextBytes). */
export const SQL_TEXT_BYTES_TAG = 40_612;
addExtension({
  Class: SqlTextBytes,
  tag: SQL_TEXT_BYTES_TAG,
  encode: (v: SqlTextBytes, encode: (x: unknown) => Uint8Array) => encode(v.bytes),
  decode: (v: unknown) => {
    if (v instanceof Uint8Array) return new SqlTextBytes(v);
    throw new MalformedMessageError('tagged TEXT bytes are not a byte string');
  },
});

/**
 * Tags cbor-x decodes at a cost no message may impose (fuzzing; invariant 5: a bad
 * message never stops a node). Its bignums (tags 2, 3) decode in quadratic time: a 60 KB one
 * took 3 s, a 1 MB one would hold a shard for minutes. SQLite integers fit in 64 bits, which
 * CBOR carries untagged, so a bignum is accepted only up to 8 bytes. Its value-sharing tags
 * (28, 29) build DAGs whose String() doubles per level: a 100-byte message took 12 s and a
 * gigabyte of strings. Our encoder never writes them.
 */
const MAX_BIGNUM_BYTES = 8;
/** cbor-x takes decode-only extensions (no Class, no encode); its typings do not say so. */
const decodeOnly = (tag: number, decode: (v: unknown) => unknown): void =>
  addExtension({ tag, decode } as unknown as Parameters<typeof addExtension>[0]);
for (const tag of [2, 3]) {
  decodeOnly(tag, (v) => {
    if (!(v instanceof Uint8Array) || v.length > MAX_BIGNUM_BYTES) {
      throw new MalformedMessageError(`CBOR bignum (tag ${tag}) longer than ${MAX_BIGNUM_BYTES} bytes`);
    }
    let n = 0n;
    for (const byte of v) n = (n << 8n) | BigInt(byte);
    return tag === 2 ? n : -1n - n;
  });
}
for (const tag of [28, 29]) {
  decodeOnly(tag, () => {
    throw new MalformedMessageError(`CBOR value sharing (tag ${tag}) is not used by change batches`);
  });
}

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

/** zstd-napi's low-level binding (a CommonJS native module; loaded by require, typed by its .d.ts). */
const zstd = createRequire(import.meta.url)('zstd-napi/binding.js') as typeof import('zstd-napi/binding.js');
let dctx: InstanceType<typeof zstd.DCtx> | undefined;
function decompressionContext(): InstanceType<typeof zstd.DCtx> {
  if (dctx === undefined) {
    dctx = new zstd.DCtx();
    dctx.setParameter(zstd.DParameter.windowLogMax, 26); // at most a 64 MiB window
  }
  return dctx;
}
const STREAM_CHUNK = 128 * 1024;

const ZSTD_MAGIC = 0xfd2fb528;
/** Refuse to inflate a message beyond this (decompression bombs). */
export const MAX_DECODED_BYTES = 64 * 1024 * 1024;

export function encodeRecords(records: readonly ChangeRecord[]): Uint8Array {
  return encoder.encode(records);
}

/**
 * One change record as CBOR. A batch is records joined under an array header
 * (`joinRecords`), the same bytes as `encodeRecords` of them: the publisher
 * encodes each change once when it reads it and keeps these bytes, not the row
 * objects, while the change waits to be published.
 */
export function encodeRecord(record: ChangeRecord): Uint8Array {
  return encoder.encode(record);
}

/** Bytes of the CBOR header of an array of `n` items. */
export function arrayHeaderBytes(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

/** A CBOR array of already encoded items (`encodeRecord`): the batch body. */
export function joinRecords(items: readonly Uint8Array[]): Uint8Array {
  const n = items.length;
  const head = arrayHeaderBytes(n);
  let bytes = head;
  for (const item of items) bytes += item.length;
  const out = Buffer.allocUnsafe(bytes);
  if (head === 1) {
    out[0] = 0x80 | n;
  } else if (head === 2) {
    out[0] = 0x98;
    out[1] = n;
  } else if (head === 3) {
    out[0] = 0x99;
    out.writeUInt16BE(n, 1);
  } else {
    out[0] = 0x9a;
    out.writeUInt32BE(n, 1);
  }
  let at = head;
  for (const item of items) {
    out.set(item, at);
    at += item.length;
  }
  return out;
}

export function compressBody(cbor: Uint8Array, level = 3): Uint8Array {
  return compress(cbor, { compressionLevel: level });
}

export function isCompressed(body: Uint8Array): boolean {
  return (
    body.length >= 4 &&
    (body[0]! | (body[1]! << 8) | (body[2]! << 16) | (body[3]! << 24)) >>> 0 === ZSTD_MAGIC
  );
}

/**
 * Decompresses a message body, never producing more than `max` bytes
 * (decompression bombs, invariant 5: a bad message never stops a node).
 * `zstd-napi`'s `decompress()` has no limit: it allocates the sum of every
 * frame's declared size, and for frames that declare no size it streams
 * without bound (a 31 KB frame inflated to 1 GB, 2 GB of RSS, before our
 * size check could run). So: frames are walked first and their declared sizes
 * summed; all declared and within the limit, one native call into an exact
 * buffer; otherwise a streaming loop that stops one byte past the limit.
 */
function decompressBounded(body: Uint8Array, max: number): Uint8Array {
  let declared: number | undefined = 0;
  for (let rest = body; rest.length > 0;) {
    let size: number | null;
    let frameLength: number;
    try {
      size = zstd.getFrameContentSize(rest);
      frameLength = zstd.findFrameCompressedSize(rest);
    } catch (err) {
      throw new MalformedMessageError(`invalid zstd frame: ${errorMessage(err)}`, { cause: err });
    }
    if (size === null) {
      declared = undefined; // streamed below, with the same limit
      break;
    }
    declared += size;
    if (declared > max) {
      throw new MalformedMessageError(`zstd frames declare ${declared} bytes, more than ${max}`);
    }
    rest = rest.subarray(frameLength);
  }
  const ctx = decompressionContext();
  ctx.reset(zstd.ResetDirective.sessionOnly); // a previous bad message may have left a frame open
  try {
    if (declared !== undefined) {
      const out = Buffer.allocUnsafe(declared);
      const produced = ctx.decompress(out, body);
      if (produced !== declared) {
        throw new MalformedMessageError(`zstd frames declare ${declared} bytes but hold ${produced}`);
      }
      return out;
    }
    const chunks: Uint8Array[] = [];
    let total = 0;
    let input = body;
    let pending = 1;
    while (input.length > 0 || pending !== 0) {
      const room = max - total + 1; // one byte more than allowed reveals an overflow
      const chunk = Buffer.allocUnsafe(Math.min(room, Math.max(STREAM_CHUNK, input.length * 4)));
      const [hint, produced, consumed] = ctx.decompressStream(chunk, input);
      if (produced === 0 && consumed === 0) throw new MalformedMessageError('truncated zstd frame');
      total += produced;
      if (total > max) throw new MalformedMessageError(`decompressed message larger than ${max} bytes`);
      chunks.push(chunk.subarray(0, produced));
      input = input.subarray(consumed);
      pending = hint;
    }
    return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
  } catch (err) {
    if (err instanceof MalformedMessageError) throw err;
    throw new MalformedMessageError(`cannot decompress: ${errorMessage(err)}`, { cause: err });
  }
}

/** Decodes and validates a message body; anything that can never apply throws MalformedMessageError. */
export function decodeBody(body: Uint8Array): ChangeRecord[] {
  const cbor = isCompressed(body) ? decompressBounded(body, MAX_DECODED_BYTES) : body;
  checkCborLimits(cbor);
  let decoded: unknown;
  try {
    decoded = encoder.decode(cbor);
  } catch (err) {
    throw new MalformedMessageError(`cannot decode CBOR: ${errorMessage(err)}`, { cause: err });
  }
  return validateChangeBatch(decoded);
}
