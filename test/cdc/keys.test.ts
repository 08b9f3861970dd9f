/**
 * Keys: an UPDATE that changes the key logs a delete of the old key, then an
 * update of the new one (so replicas drop the old row); composite keys come in
 * declared key order; tables without a primary key are keyed by rowid;
 * WITHOUT ROWID and AUTOINCREMENT tables work. Written by the sqlite3 shell.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { captureFixture, sqlite3, sqlRow } from './capture-fixture.ts';

/** `[type, key, row]` of every change of `table`. */
function changesOf(f: ReturnType<typeof captureFixture>, table: string) {
  return f
    .scan()
    .filter((c) => c.table === table)
    .map((c) => [c.type, c.key, sqlRow(c)]);
}

test('an update that changes the primary key logs a delete of the old key, then an update of the new', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);');
  sqlite3(
    f.path,
    "INSERT INTO t VALUES (1, 'a'); UPDATE t SET v = 'b' WHERE id = 1; UPDATE t SET id = 7, v = 'c' WHERE id = 1;",
  );
  assert.deepEqual(changesOf(f, 't'), [
    ['insert', [1n], { id: 1n, v: 'a' }],
    ['update', [1n], { id: 1n, v: 'b' }], // key unchanged: one update, no delete
    ['delete', [1n], { id: 1n, v: 'b' }],
    ['update', [7n], { id: 7n, v: 'c' }],
  ]);
});

test('UPDATE OR REPLACE moving a row onto an existing key logs what a replica needs to converge', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);');
  sqlite3(
    f.path,
    "INSERT INTO t VALUES (1, 'one'), (2, 'two'); UPDATE OR REPLACE t SET id = 2 WHERE id = 1;",
  );
  // The shell runs without recursive triggers, so the replaced row 2 fires no delete trigger;
  // replaying delete(1) then upsert(2) still yields the origin's single row (2, 'one').
  assert.deepEqual(changesOf(f, 't').slice(2), [
    ['delete', [1n], { id: 1n, v: 'one' }],
    ['update', [2n], { id: 2n, v: 'one' }],
  ]);
});

test('composite keys: key values in declared key order; changing one key column logs delete + update', () => {
  using f = captureFixture(
    'CREATE TABLE c (a TEXT, b INTEGER, v TEXT, PRIMARY KEY (b, a));' +
      'CREATE TABLE wr (region TEXT, id INTEGER, v TEXT, PRIMARY KEY (region, id)) WITHOUT ROWID;',
  );
  sqlite3(
    f.path,
    "INSERT INTO c VALUES ('x', 1, 'v1'); UPDATE c SET a = 'y'; UPDATE c SET v = 'v2'; DELETE FROM c;" +
      "INSERT INTO wr VALUES ('eu', 1, 'v1'); UPDATE wr SET id = 2; UPDATE wr SET v = 'v2'; DELETE FROM wr;",
  );
  assert.deepEqual(changesOf(f, 'c'), [
    ['insert', [1n, 'x'], { a: 'x', b: 1n, v: 'v1' }],
    ['delete', [1n, 'x'], { a: 'x', b: 1n, v: 'v1' }],
    ['update', [1n, 'y'], { a: 'y', b: 1n, v: 'v1' }],
    ['update', [1n, 'y'], { a: 'y', b: 1n, v: 'v2' }],
    ['delete', [1n, 'y'], { a: 'y', b: 1n, v: 'v2' }],
  ]);
  assert.deepEqual(changesOf(f, 'wr'), [
    ['insert', ['eu', 1n], { region: 'eu', id: 1n, v: 'v1' }],
    ['delete', ['eu', 1n], { region: 'eu', id: 1n, v: 'v1' }],
    ['update', ['eu', 2n], { region: 'eu', id: 2n, v: 'v1' }],
    ['update', ['eu', 2n], { region: 'eu', id: 2n, v: 'v2' }],
    ['delete', ['eu', 2n], { region: 'eu', id: 2n, v: 'v2' }],
  ]);
});

test('a NULL in a (nullable, legacy) primary-key column: an unchanged NULL is no key change', () => {
  using f = captureFixture('CREATE TABLE n (a TEXT, b TEXT, v TEXT, PRIMARY KEY (a, b));');
  sqlite3(f.path, "INSERT INTO n VALUES ('x', NULL, 'v1'); UPDATE n SET v = 'v2'; UPDATE n SET b = 'y';");
  assert.deepEqual(
    changesOf(f, 'n').map(([type, key]) => [type, key]),
    [
      ['insert', ['x', null]],
      ['update', ['x', null]],
      ['delete', ['x', null]],
      ['update', ['x', 'y']],
    ],
  );
});

test('a table without a primary key is keyed by rowid, also when the rowid changes', () => {
  using f = captureFixture('CREATE TABLE log (msg TEXT, n INTEGER); CREATE TABLE odd (rowid TEXT, v);');
  const state = f.install();
  assert.deepEqual(state.tables.find((t) => t.name === 'log')?.keyColumns, ['rowid']);
  assert.deepEqual(
    state.tables.find((t) => t.name === 'odd')?.keyColumns,
    ['_rowid_'],
    'a column named rowid shadows the alias; the next free one keys the table',
  );
  sqlite3(
    f.path,
    "INSERT INTO log VALUES ('a', 1), ('a', 1); UPDATE log SET n = 2 WHERE rowid = 2; UPDATE log SET rowid = 10 WHERE rowid = 1; DELETE FROM log WHERE rowid = 2;" +
      "INSERT INTO odd VALUES ('not the rowid', 1);",
  );
  assert.deepEqual(changesOf(f, 'log'), [
    ['insert', [1n], { rowid: 1n, msg: 'a', n: 1n }],
    ['insert', [2n], { rowid: 2n, msg: 'a', n: 1n }], // identical rows stay distinct
    ['update', [2n], { rowid: 2n, msg: 'a', n: 2n }],
    ['delete', [1n], { rowid: 1n, msg: 'a', n: 1n }],
    ['update', [10n], { rowid: 10n, msg: 'a', n: 1n }],
    ['delete', [2n], { rowid: 2n, msg: 'a', n: 2n }],
  ]);
  assert.deepEqual(changesOf(f, 'odd'), [['insert', [1n], { _rowid_: 1n, rowid: 'not the rowid', v: 1n }]]);
});

test('INTEGER PRIMARY KEY AUTOINCREMENT: the assigned ids are logged', () => {
  using f = captureFixture('CREATE TABLE ai (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);');
  sqlite3(
    f.path,
    "INSERT INTO ai (v) VALUES ('a'), ('b'); DELETE FROM ai WHERE id = 2; INSERT INTO ai (v) VALUES ('c');",
  );
  assert.deepEqual(changesOf(f, 'ai'), [
    ['insert', [1n], { id: 1n, v: 'a' }],
    ['insert', [2n], { id: 2n, v: 'b' }],
    ['delete', [2n], { id: 2n, v: 'b' }],
    ['insert', [3n], { id: 3n, v: 'c' }],
  ]);
});
