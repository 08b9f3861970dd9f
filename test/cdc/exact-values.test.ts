/**
 * Values keep their exact storage class and value through capture (read with
 * safe integers) and through the wire codec (toWire, CBOR, decodeBody,
 * fromWire): re-inserted, each has the same typeof() and quote() as the origin,
 * TEXT that is not valid UTF-8 included (carried as its bytes).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import {
  arrayHeaderBytes,
  decodeBody,
  encodeRecords,
  joinRecords,
} from '../../src/codec/change-batch-codec.ts';
import type { ChangeRecord } from '../../src/codec/change-record.ts';
import { ChangeRecordWriter } from '../../src/codec/change-record-writer.ts';
import { fromWire, placeholder, SqlTextBytes, type SqlValue } from '../../src/codec/sql-value.ts';
import { captureFixture, sqlite3, sqlRow } from './capture-fixture.ts';

/** Columns without a declared type have no affinity: every value keeps the class it was given. */
const SCHEMA =
  'CREATE TABLE v (id INTEGER PRIMARY KEY, x); CREATE TABLE typed (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB);';

const TEXT = 'Ünïcødé 表 😀👩‍👩‍👧 \u0001\u0007\t\n\r\u001f\u007f\u200b\ufeff e\u0301 𝔘';

/** [id, value as bound by better-sqlite3, SQL literal for the shell, storage class] */
const VALUES: readonly [number, SqlValue, string, string][] = [
  [1, 9007199254740993n, '9007199254740993', 'integer'],
  [2, -9223372036854775808n, '-9223372036854775808', 'integer'],
  [3, 9223372036854775807n, '9223372036854775807', 'integer'],
  [4, 0n, '0', 'integer'],
  [5, -1n, '-1', 'integer'],
  [6, 2.0, '2.0', 'real'],
  [7, 1e300, '1e300', 'real'],
  [8, -0.5, '-0.5', 'real'],
  [9, 0.1, '0.1', 'real'],
  [10, -1.7976931348623157e308, '-1.7976931348623157e308', 'real'],
  [11, 5e-324, '4.9406564584124654e-324', 'real'],
  [12, TEXT, `'${TEXT}'`, 'text'],
  [13, '', "''", 'text'],
  [14, '2', "'2'", 'text'],
  [15, Buffer.from([0, 1, 2, 0xfe, 0xff]), "x'000102feff'", 'blob'],
  [16, Buffer.alloc(0), "x''", 'blob'],
  [17, null, 'NULL', 'null'],
];

/** `typeof(x)` and `quote(x)` of every row, in id order: equal means identical storage class and value. */
function storage(db: Database.Database, table = 'v'): [bigint, string, string][] {
  return db
    .prepare(`SELECT id, typeof(x), quote(x) FROM "${table}" ORDER BY id`)
    .raw(true)
    .safeIntegers(true)
    .all() as [bigint, string, string][];
}

test('integers beyond 2^53, REAL (2.0 stays REAL), TEXT, BLOB and NULL are captured exactly', () => {
  using f = captureFixture(SCHEMA);
  const app = new Database(f.path);
  try {
    const insert = app.prepare('INSERT INTO v VALUES (?, ?)');
    app.transaction(() => {
      for (const [id, value] of VALUES) insert.run(id, value);
    })();
    const expected = storage(app);
    assert.deepEqual(
      expected.map(([, type]) => type),
      VALUES.map(([, , , type]) => type),
      'the origin holds the intended storage classes',
    );
    // The shell's literals produce the same storage as better-sqlite3's bound values.
    sqlite3(f.path, 'DELETE FROM v;');
    sqlite3(f.path, VALUES.map(([id, , sql]) => `INSERT INTO v VALUES (${id}, ${sql});`).join(''));
    assert.deepEqual(storage(app), expected);

    const changes = f.scan();
    assert.equal(changes.length, VALUES.length * 3);
    for (const [i, [id, value]] of VALUES.entries()) {
      for (const c of [changes[i]!, changes[VALUES.length + i]!, changes[2 * VALUES.length + i]!]) {
        const row = sqlRow(c);
        assert.equal(row.id, BigInt(id));
        assert.deepEqual(row.x, value, `id ${id} (${c.type})`);
        if (typeof value === 'number') assert.equal(typeof row.x, 'number', `id ${id}: REAL read as number`);
        if (typeof value === 'bigint')
          assert.equal(typeof row.x, 'bigint', `id ${id}: INTEGER read as bigint`);
      }
    }
  } finally {
    app.close();
  }
});

test('captured values survive the wire codec and re-insert with the same storage class and value', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(f.path, VALUES.map(([id, , sql]) => `INSERT INTO v VALUES (${id}, ${sql});`).join(''));
  sqlite3(
    f.path,
    `INSERT INTO typed VALUES (1, 9223372036854775807, 2.0, '${TEXT}', x'00ff'), (2, -9007199254740993, -0.5, '', NULL);`,
  );
  const records: ChangeRecord[] = f.scan().map((c) => {
    return {
      FromNodeId: 1,
      Payload: { Id: c.changeId, Type: c.type, TableName: c.table, Row: c.row, CreatedAt: c.createdAt },
    };
  });
  const decoded = decodeBody(encodeRecords(records));
  assert.equal(decoded.length, VALUES.length + 2);

  const replica = new Database(':memory:');
  replica.exec(SCHEMA);
  for (const rec of decoded) {
    const cols = Object.keys(rec.Payload.Row);
    replica
      .prepare(
        `INSERT INTO "${rec.Payload.TableName}" (${cols.join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`,
      )
      .run(...cols.map((k) => fromWire(rec.Payload.Row[k])));
  }
  const origin = new Database(f.path, { readonly: true });
  try {
    assert.deepEqual(storage(replica), storage(origin));
    const typed = (db: Database.Database) =>
      db
        .prepare(
          'SELECT id, typeof(i), quote(i), typeof(r), quote(r), typeof(t), quote(t), typeof(b), quote(b) FROM typed ORDER BY id',
        )
        .raw(true)
        .all();
    assert.deepEqual(typed(replica), typed(origin));
    assert.equal(
      replica.prepare('SELECT typeof(r) FROM typed WHERE id = 1').pluck().get(),
      'real',
      '2.0 stays REAL',
    );
  } finally {
    origin.close();
    replica.close();
  }
});

test('STRICT tables keep their declared types; generated columns are not captured (replicas compute them)', () => {
  using f = captureFixture(
    'CREATE TABLE s (id INTEGER PRIMARY KEY, r REAL, a ANY) STRICT;' +
      'CREATE TABLE g (id INTEGER PRIMARY KEY, a INT, twice INT AS (a * 2) VIRTUAL, next INT AS (a + 1) STORED);',
  );
  sqlite3(
    f.path,
    "INSERT INTO s VALUES (1, 3, 2.0), (2, 0.5, '7'); INSERT INTO g (id, a) VALUES (1, 5); UPDATE g SET a = 6;",
  );
  const changes = f.scan();
  assert.deepEqual(
    changes.map((c) => [c.table, c.type, sqlRow(c)]),
    [
      ['s', 'insert', { id: 1n, r: 3, a: 2 }],
      ['s', 'insert', { id: 2n, r: 0.5, a: '7' }],
      ['g', 'insert', { id: 1n, a: 5n }],
      ['g', 'update', { id: 1n, a: 6n }],
    ],
  );
  assert.equal(
    typeof sqlRow(changes[0]!).r,
    'number',
    'REAL 3.0 of a STRICT REAL column is read as a number',
  );
});

test('TEXT that is not valid UTF-8 is captured as its bytes and written back as the same TEXT', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(
    f.path,
    "INSERT INTO v VALUES (1, CAST(x'636166e9' AS TEXT)), (2, CAST(x'ff' AS TEXT)), (3, 'caf\uFFFD ok'), (4, CAST(x'61c3' AS TEXT));" +
      "INSERT INTO typed VALUES (1, 1, 1.5, CAST(x'e9' AS TEXT), x'e9');",
  );
  const changes = f.scan();
  const x = (id: number) => changes.find((c) => c.table === 'v' && sqlRow(c).id === BigInt(id))!.row.x;
  const bytesOf = (v: unknown) => (v instanceof SqlTextBytes ? Buffer.from(v.bytes).toString('hex') : v);
  assert.equal(bytesOf(x(1)), '636166e9');
  assert.equal(bytesOf(x(2)), 'ff');
  assert.equal(x(3), 'caf\uFFFD ok', 'a real U+FFFD (valid UTF-8) stays a string');
  assert.ok(x(4) instanceof SqlTextBytes, 'a truncated sequence');

  // Both encoders: the records the publisher writes from the change-log rows, and encodeRecords.
  const writer = new ChangeRecordWriter(1);
  const written = changes.map((c) =>
    Uint8Array.from(
      writer.write(c.layout, c.changeId, c.type, c.values, c.createdAt, c.changeId * 10, c.valuesFrom),
    ),
  );
  const records: ChangeRecord[] = changes.map((c) => ({
    FromNodeId: 1,
    Payload: {
      Id: c.changeId,
      Type: c.type,
      TableName: c.table,
      Row: c.row,
      CreatedAt: c.createdAt,
      Version: c.changeId * 10,
    },
  }));
  assert.deepEqual(
    Buffer.concat(written),
    Buffer.from(encodeRecords(records).subarray(arrayHeaderBytes(records.length))),
  );

  const replica = new Database(':memory:');
  replica.exec(SCHEMA);
  for (const rec of decodeBody(joinRecords(written))) {
    const row = rec.Payload.Row;
    const cols = Object.keys(row);
    replica
      .prepare(
        `INSERT INTO "${rec.Payload.TableName}" (${cols.join(', ')}) VALUES (${cols.map((c) => placeholder(row[c])).join(', ')})`,
      )
      .run(...cols.map((k) => fromWire(row[k])));
  }
  const origin = new Database(f.path, { readonly: true });
  try {
    const exact = (db: Database.Database, sql: string) => db.prepare(sql).raw(true).all();
    for (const sql of [
      'SELECT id, typeof(x), hex(x) FROM v ORDER BY id',
      'SELECT id, typeof(t), hex(t), typeof(b), hex(b) FROM typed ORDER BY id',
    ])
      assert.deepEqual(exact(replica, sql), exact(origin, sql), sql);
    assert.deepEqual(exact(replica, 'SELECT typeof(x), hex(x) FROM v WHERE id = 1'), [['text', '636166E9']]);
  } finally {
    origin.close();
    replica.close();
  }
});
