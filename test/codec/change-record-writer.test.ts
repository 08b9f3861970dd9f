/**
 * The publisher's record writer produces exactly the bytes of `encodeRecord`
 * (cbor-x) for the same change, over every SQLite storage class and the edge
 * values of each: what receivers decode cannot tell the two apart.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeBody, encodeRecord, joinRecords } from '../../src/codec/change-batch-codec.ts';
import { ChangeRecordWriter, recordLayout } from '../../src/codec/change-record-writer.ts';
import { CHANGE_TYPES, type ChangeRecord } from '../../src/codec/change-record.ts';
import { toWire, type SqlValue, type WireValue } from '../../src/codec/sql-value.ts';
import { mulberry32 } from '../helpers/prng.ts';

const EDGES: SqlValue[] = [
  null,
  0n,
  1n,
  23n,
  24n,
  255n,
  256n,
  65_535n,
  65_536n,
  2n ** 32n - 1n,
  2n ** 32n,
  2n ** 53n - 1n,
  2n ** 53n,
  2n ** 53n + 1n,
  2n ** 63n - 1n,
  -1n,
  -24n,
  -25n,
  -256n,
  -257n,
  -65_536n,
  -65_537n,
  -(2n ** 31n),
  -(2n ** 31n) - 1n,
  -(2n ** 32n),
  -(2n ** 32n) - 1n,
  -(2n ** 53n) + 1n,
  -(2n ** 53n),
  -(2n ** 63n),
  0.5,
  -0.5,
  2.0,
  -0.0,
  0.0,
  1e300,
  -1e-300,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  Infinity,
  -Infinity,
  2 ** 53,
  '',
  'a',
  'x'.repeat(23),
  'x'.repeat(24),
  'x'.repeat(63),
  'x'.repeat(64),
  'x'.repeat(300),
  'y'.repeat(70_000),
  'é😀 Grüße 世界',
  '😀'.repeat(40),
  new Uint8Array(0),
  Buffer.from([0, 255, 7]),
  Buffer.alloc(300, 9),
  Buffer.alloc(70_000, 1),
];

function viaObjects(
  nodeId: number,
  table: string,
  columns: string[],
  changeId: number,
  type: ChangeRecord['Payload']['Type'],
  values: SqlValue[],
  createdAt: number,
  version: number,
): Uint8Array {
  const row: Record<string, WireValue> = {};
  columns.forEach((c, i) => (row[c] = toWire(values[i]!)));
  return encodeRecord({
    FromNodeId: nodeId,
    Payload: { Id: changeId, Type: type, TableName: table, Row: row, CreatedAt: createdAt, Version: version },
  });
}

test('every edge value of every storage class: the same bytes as encodeRecord (values read from an offset, as the scanner hands them)', () => {
  for (const nodeId of [1, 23, 24, 70_000, 2 ** 32 - 1]) {
    const writer = new ChangeRecordWriter(nodeId);
    const layout = recordLayout('t', ['v']);
    for (const v of EDGES) {
      for (const [changeId, version] of [
        [1, 0],
        [300, 1_795_000_000_000_123],
        [2 ** 40, 2 ** 53 - 1],
      ] as const) {
        const got = writer.write(
          layout,
          changeId,
          'update',
          [99n, 'id', null, v],
          1_795_000_000_000,
          version,
          3,
        );
        const want = viaObjects(nodeId, 't', ['v'], changeId, 'update', [v], 1_795_000_000_000, version);
        assert.deepEqual(
          Buffer.from(got),
          Buffer.from(want),
          `node ${nodeId}, value ${String(v).slice(0, 20)}`,
        );
      }
    }
  }
});

test('random rows of many columns, written back to back: each the same bytes, and a batch of them decodes', () => {
  const rand = mulberry32(20261127);
  const writer = new ChangeRecordWriter(7);
  const columns = Array.from({ length: 30 }, (_, i) => (i === 5 ? 'Ünïcode kolumn' : `col_${i}`));
  const layout = recordLayout('a "quoted" table', columns);
  const records: Uint8Array[] = [];
  const wanted: Uint8Array[] = [];
  for (let n = 0; n < 2000; n++) {
    const values = columns.map(() => EDGES[Math.floor(rand() * EDGES.length)]!);
    const type = CHANGE_TYPES[n % 3]!;
    const got = writer.write(layout, n + 1, type, values, n * 1000, n * 7);
    records.push(got);
    wanted.push(viaObjects(7, 'a "quoted" table', columns, n + 1, type, values, n * 1000, n * 7));
  }
  // Checked after all were written: earlier records stay intact when the writer moves to a new chunk.
  records.forEach((r, i) => assert.deepEqual(Buffer.from(r), Buffer.from(wanted[i]!), `record ${i}`));
  const decoded = decodeBody(joinRecords(records.slice(0, 50)));
  assert.equal(decoded.length, 50);
  assert.equal(decoded[49]!.Payload.Id, 50);
  assert.equal(decoded[49]!.Payload.TableName, 'a "quoted" table');
  assert.equal(decoded[49]!.Payload.Version, 49 * 7);
});
