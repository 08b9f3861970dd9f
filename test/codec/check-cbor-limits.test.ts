/**
 * The bounded CBOR walk: every batch our encoder writes passes it, and what it
 * refuses (too many items or objects, too deep, lengths beyond the bytes,
 * truncation) is refused before cbor-x allocates, with a MalformedMessageError
 * whose reason says which limit.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Encoder } from 'cbor-x';
import { decodeBody, encodeRecords } from '../../src/codec/change-batch-codec.ts';
import { MalformedMessageError } from '../../src/codec/change-record.ts';
import { checkCborLimits, CBOR_LIMITS } from '../../src/codec/check-cbor-limits.ts';
import { change } from '../replication/apply-messages.ts';

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

function refused(bytes: Uint8Array, reason: RegExp, limits = CBOR_LIMITS): void {
  assert.throws(
    () => checkCborLimits(bytes, limits),
    (err: unknown) => err instanceof MalformedMessageError && reason.test(err.message),
  );
}

test('batches the encoder writes pass: every SQLite value type, wide rows, 1000 changes', () => {
  const wide: Record<string, bigint> = {};
  for (let c = 0; c < 2000; c++) wide[`c${c}`] = BigInt(c);
  const batches = [
    [change('insert', 'items', { id: 1n, t: 'text ✓', r: 1.5, i: 2.0, n: null, b: Buffer.from([1, 2]) })],
    [change('update', 'wide', wide)],
    Array.from({ length: 1000 }, (_, i) => change('delete', 'items', { id: BigInt(i), big: 2n ** 62n })),
  ];
  for (const records of batches) {
    const bytes = encodeRecords(records);
    checkCborLimits(bytes);
    assert.equal(decodeBody(bytes).length, records.length);
  }
  // Indefinite lengths, tags and every header width, as another encoder may write them.
  const odd = Uint8Array.from([
    0x9f, 0xbf, 0x61, 0x61, 0x5f, 0x41, 0x00, 0xff, 0xff, 0xc1, 0x1a, 0, 0, 0, 1, 0xfb, 0, 0, 0, 0, 0, 0, 0,
    0, 0xff,
  ]);
  checkCborLimits(odd);
  checkCborLimits(cbor.encode({ a: [1, 'x', null, true, 2 ** 40, -(2 ** 40), 1.25, new Uint8Array(300)] }));
});

test('a bomb of empty maps is refused by its object count before decoding', () => {
  const bytes = Buffer.alloc(8 * 1024 * 1024, 0xa0);
  bytes[0] = 0x9a;
  bytes.writeUInt32BE(bytes.length - 5, 1);
  const t0 = performance.now();
  refused(bytes, /more than 2097152 arrays, maps, byte strings and tags/);
  assert.ok(performance.now() - t0 < 1000, 'refused in linear time');
  assert.throws(() => decodeBody(bytes), /more than 2097152 arrays/);
});

test('too many items, too deep, lengths beyond the bytes, truncation and stray breaks are refused', () => {
  const small = { maxDepth: 3, maxItems: 10, maxObjects: 4 };
  refused(cbor.encode(Array.from({ length: 20 }, () => 0)), /more than 10 items/, small);
  refused(cbor.encode([[], [], [], [], []]), /more than 4 arrays/, small);
  refused(cbor.encode([[[[1]]]]), /nested deeper than 3/, small);
  refused(Uint8Array.from([0x9b, 0, 0, 0, 1, 0, 0, 0, 0, 0]), /declares 4294967296 items in 1 bytes/);
  refused(
    Uint8Array.from([0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
    /declares \d+ items in 0 bytes/,
  );
  refused(Uint8Array.from([0x5a, 0, 1, 0, 0, 1]), /truncated CBOR/);
  refused(Uint8Array.from([0x82, 0x61, 0x61]), /truncated CBOR/);
  refused(Uint8Array.from([0x83, 0x01, 0x01]), /declares 3 items in 2 bytes/);
  refused(Uint8Array.from([0x81, 0xff]), /stray CBOR break/);
  refused(Uint8Array.from([0x1f]), /invalid CBOR header/);
  refused(new Uint8Array(100_000).fill(0x81), /nested deeper than 16/);
});
