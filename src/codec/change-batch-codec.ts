/**
 * Message bodies: a CBOR array of change records, zstd-compressed when the
 * sender chose to. Compression is recognised by the zstd frame magic, which no
 * CBOR array starts with, so nodes with different `compress` settings interoperate.
 * Pure (no I/O): workers import this file directly.
 */
import { addExtension, Encoder } from 'cbor-x';
import { compress, decompress } from 'zstd-napi';
import { MalformedMessageError, validateChangeBatch, type ChangeRecord } from './change-record.ts';
import { SqlReal } from './sql-value.ts';

/** CBOR tag of an integral REAL (first-come-first-served range). */
const SQL_REAL_TAG = 40_611;
addExtension({
  Class: SqlReal,
  tag: SQL_REAL_TAG,
  encode: (v: SqlReal, encode: (x: unknown) => Uint8Array) => encode(v.value),
  decode: (v: unknown) => {
    if (typeof v !== 'number') throw new MalformedMessageError('tagged REAL is not a number');
    return new SqlReal(v);
  },
});

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

const ZSTD_MAGIC = 0xfd2fb528;
/** Refuse to inflate a message beyond this (decompression bombs). */
export const MAX_DECODED_BYTES = 64 * 1024 * 1024;

export function encodeRecords(records: readonly ChangeRecord[]): Uint8Array {
  return encoder.encode(records);
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

/** The frame's declared content size, or undefined when the frame does not declare it. */
function zstdContentSize(body: Uint8Array): number | undefined {
  const fhd = body[4];
  if (fhd === undefined) throw new MalformedMessageError('truncated zstd frame');
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const dictFlag = fhd & 3;
  let pos = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictFlag]!;
  const size = [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  if (size === 0) return undefined;
  if (body.length < pos + size) throw new MalformedMessageError('truncated zstd frame header');
  let v = 0;
  for (let i = size - 1; i >= 0; i--) v = v * 256 + body[pos + i]!;
  pos += size;
  return size === 2 ? v + 256 : v;
}

/** Decodes and validates a message body; anything that can never apply throws MalformedMessageError. */
export function decodeBody(body: Uint8Array): ChangeRecord[] {
  let cbor = body;
  if (isCompressed(body)) {
    const declared = zstdContentSize(body);
    if (declared !== undefined && declared > MAX_DECODED_BYTES) {
      throw new MalformedMessageError(
        `zstd frame declares ${declared} bytes, more than ${MAX_DECODED_BYTES}`,
      );
    }
    try {
      cbor = decompress(body, { windowLogMax: 26 });
    } catch (err) {
      throw new MalformedMessageError(`cannot decompress: ${(err as Error).message}`, { cause: err });
    }
    if (cbor.length > MAX_DECODED_BYTES) throw new MalformedMessageError('decompressed message too large');
  }
  let decoded: unknown;
  try {
    decoded = encoder.decode(cbor);
  } catch (err) {
    throw new MalformedMessageError(`cannot decode CBOR: ${(err as Error).message}`, { cause: err });
  }
  return validateChangeBatch(decoded);
}
