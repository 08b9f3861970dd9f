/**
 * Message decoding (src/codec) against hostile input: whatever the bytes,
 * decodeBody either returns well-formed change records or throws
 * MalformedMessageError (a dead letter), quickly and without inflating a
 * decompression bomb (invariant 5: a bad message never stops a node).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { Encoder } from 'cbor-x';
import { CompressStream } from 'zstd-napi';
import {
  compressBody,
  decodeBody,
  encodeRecord,
  encodeRecords,
  joinRecords,
  MAX_DECODED_BYTES,
} from '../../src/codec/change-batch-codec.ts';
import { MalformedMessageError } from '../../src/codec/change-record.ts';
import { SqlReal } from '../../src/codec/sql-value.ts';
import { change, declaredZstdFrame, undeclaredZstdFrame } from './apply-messages.ts';

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const BLOCK = 128 * 1024;

function malformed(body: Uint8Array, reason: RegExp): void {
  const t0 = performance.now();
  assert.throws(
    () => decodeBody(body),
    (err: unknown) => err instanceof MalformedMessageError && reason.test(err.message),
  );
  const ms = performance.now() - t0;
  assert.ok(ms < 2000, `refused in ${ms.toFixed(0)} ms`);
}

const records = [
  change('insert', 't', { id: 9007199254740993n, r: 2, s: 'é😀', b: new Uint8Array([0, 255]), n: null }),
  change('delete', 't', { id: -(2n ** 63n) }),
];

test('round trip, plain and compressed, keeps every storage class', () => {
  const cbor = encodeRecords(records);
  for (const body of [cbor, compressBody(cbor)]) {
    const [a, b] = decodeBody(body);
    assert.equal(a!.Payload.Row.id, 9007199254740993n);
    assert.ok(a!.Payload.Row.r instanceof SqlReal);
    assert.equal((a!.Payload.Row.r as SqlReal).value, 2);
    assert.equal(a!.Payload.Row.s, 'é😀');
    assert.deepEqual([...(a!.Payload.Row.b as Uint8Array)], [0, 255]);
    assert.equal(a!.Payload.Row.n, null);
    assert.equal(b!.Payload.Row.id, -(2n ** 63n));
  }
});

test('records encoded one by one and joined are the bytes of the batch encoded at once, at every header size', () => {
  // 23/24, 255/256 and 65535/65536 items: the four CBOR array header lengths.
  for (const n of [1, 23, 24, 255, 256, 65_535, 65_536]) {
    const batch = Array.from({ length: n }, (_, i) => records[i % 2]!);
    const joined = joinRecords(batch.map((r) => encodeRecord(r)));
    assert.deepEqual(Buffer.from(joined), Buffer.from(encodeRecords(batch)), `${n} records`);
    assert.equal(decodeBody(joined).length, n);
  }
});

test('concatenated frames and frames without a declared size decode to their concatenated content', async () => {
  const cbor = encodeRecords(records);
  const half = Math.floor(cbor.length / 2);
  const two = Buffer.concat([compressBody(cbor.subarray(0, half)), compressBody(cbor.subarray(half))]);
  assert.equal(decodeBody(two).length, 2);
  const stream = new CompressStream(); // streaming compression does not write the content size
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  stream.end(Buffer.from(cbor));
  await once(stream, 'end');
  assert.equal(decodeBody(Buffer.concat(chunks)).length, 2);
});

test('a zstd frame declaring a huge size is refused before anything is allocated', () => {
  malformed(declaredZstdFrame(2 ** 40, BLOCK), /declare 1099511627776 bytes/);
  malformed(declaredZstdFrame(MAX_DECODED_BYTES + 1, BLOCK), /declare/);
});

test('many frames whose sizes add up beyond the limit are refused (zstd-napi sums them and allocates)', () => {
  const frame = declaredZstdFrame(40 * 1024 * 1024);
  assert.ok(frame.length < 8 * 1024, 'a 40 MiB frame fits in a few KiB');
  malformed(new Uint8Array([...frame, ...frame]), /declare 83886080 bytes/);
});

test('a frame that declares no size and inflates beyond the limit stops at the limit', () => {
  const bomb = undeclaredZstdFrame(1024 * 1024 * 1024); // 1 GiB from 32 KiB
  assert.ok(bomb.length < 40 * 1024);
  const before = process.memoryUsage().rss;
  malformed(bomb, /larger than 67108864 bytes/);
  const grew = process.memoryUsage().rss - before;
  assert.ok(grew < 512 * 1024 * 1024, `RSS grew by ${Math.round(grew / 1048576)} MiB`);
});

test('truncated, lying and garbage frames are malformed', () => {
  const good = compressBody(encodeRecords(records));
  malformed(good.subarray(0, good.length - 3), /zstd|truncated/);
  malformed(declaredZstdFrame(1000, 2000), /zstd|decompress/);
  malformed(new Uint8Array([...ZSTD_MAGIC, 0xff, 0xff, 0xff]), /zstd|truncated/);
  malformed(new Uint8Array([...good, 1, 2, 3]), /zstd/);
});

test('valid CBOR of the wrong shape is malformed, and so are random bytes', () => {
  const e = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
  const shapes: [unknown, RegExp][] = [
    [{ hello: 'world' }, /not a change batch/],
    [[], /empty change batch/],
    [[1, 2], /expected a map/],
    [[{ FromNodeId: 'x' }], /FromNodeId/],
    [[{ FromNodeId: 1, Payload: [] }], /Payload/],
    [[{ FromNodeId: 1, Payload: { Id: 1, Type: 'upsert', TableName: 't', Row: { a: 1 } } }], /Type/],
    [[{ FromNodeId: 1, Payload: { Id: 1, Type: 'insert', TableName: '', Row: { a: 1 } } }], /TableName/],
    [[{ FromNodeId: 1, Payload: { Id: 1, Type: 'insert', TableName: 't', Row: {} } }], /Row is empty/],
    [
      [{ FromNodeId: 1, Payload: { Id: 1, Type: 'insert', TableName: 't', Row: { a: [1] } } }],
      /not an SQLite value/,
    ],
    [
      [{ FromNodeId: 1, Payload: { Id: 1, Type: 'insert', TableName: 't', Row: { a: { b: 1 } } } }],
      /not an SQLite value/,
    ],
    [[{ FromNodeId: 1, Payload: { Id: -1, Type: 'insert', TableName: 't', Row: { a: 1 } } }], /Id/],
  ];
  for (const [value, reason] of shapes) {
    malformed(e.encode(value), reason);
    malformed(compressBody(e.encode(value)), reason);
  }
  malformed(new TextEncoder().encode('{"json": true}'), /CBOR|not a change batch/);
  malformed(new Uint8Array(0), /CBOR/);
  // Random bytes (seeded): never anything but a MalformedMessageError.
  let x = 12345;
  for (let i = 0; i < 2000; i++) {
    const len = 1 + (i % 64);
    const bytes = new Uint8Array(len);
    for (let j = 0; j < len; j++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      bytes[j] = x >>> 24;
    }
    if (i % 3 === 0) bytes.set(ZSTD_MAGIC.slice(0, Math.min(4, len)));
    try {
      decodeBody(bytes);
    } catch (err) {
      assert.ok(
        err instanceof MalformedMessageError,
        `random bytes ${Buffer.from(bytes).toString('hex')}: ${String(err)}`,
      );
    }
  }
});
