/**
 * Schema changes made by the application while capture runs, followed by the
 * re-install the daemon runs on every schema change: added columns are
 * captured without losing the changes logged in between, new tables are
 * backfilled, dropped tables lose their capture.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import {
  changeLogTable,
  GLOBAL_LOG,
  quoteIdent as q,
  TRIGGER_KINDS,
  triggerName,
} from '../../src/cdc/names.ts';
import { ChangelogScanner } from '../../src/changelog/changelog-scanner.ts';
import { brief, captureFixture, exists, sqlite3 } from './capture-fixture.ts';

function logColumns(db: Database.Database, table: string): string[] {
  return (db.prepare(`PRAGMA table_info(${q(changeLogTable(table))})`).all() as { name: string }[]).map(
    (c) => c.name,
  );
}

test('ALTER TABLE ADD COLUMN: re-install adds val_<col>, logs the rows pending changes touched, captures the column', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT);');
  sqlite3(f.path, "INSERT INTO t VALUES (1, 'a1');");
  sqlite3(f.path, "ALTER TABLE t ADD COLUMN c TEXT DEFAULT 'dflt';");
  // Between the ALTER and the re-install the old triggers still log, without c.
  sqlite3(
    f.path,
    "INSERT INTO t VALUES (2, 'a2', 'c2'); UPDATE t SET c = 'c1' WHERE id = 1;" +
      "INSERT INTO t (id, a) VALUES (3, 'a3'); INSERT INTO t VALUES (4, 'a4', 'gone'); DELETE FROM t WHERE id = 4;",
  );
  assert.ok(!logColumns(f.db, 't').includes('val_c'));

  const state = f.install();
  assert.deepEqual(state.changed, ['t']);
  assert.ok(logColumns(f.db, 't').includes('val_c'));
  // Pending changes stay as logged (they may be on their way already); each row they touched gets
  // one more change with its current values, so no replica keeps a stale default.
  assert.deepEqual(f.scan().map(brief), [
    ['t', 'insert', { id: 1n, a: 'a1', c: null }],
    ['t', 'insert', { id: 2n, a: 'a2', c: null }],
    ['t', 'update', { id: 1n, a: 'a1', c: null }],
    ['t', 'insert', { id: 3n, a: 'a3', c: null }],
    ['t', 'insert', { id: 4n, a: 'a4', c: null }],
    ['t', 'delete', { id: 4n, a: 'a4', c: null }],
    ['t', 'update', { id: 1n, a: 'a1', c: 'c1' }],
    ['t', 'update', { id: 2n, a: 'a2', c: 'c2' }],
    ['t', 'update', { id: 3n, a: 'a3', c: 'dflt' }],
  ]);

  sqlite3(f.path, "UPDATE t SET c = 'new' WHERE id = 2; INSERT INTO t VALUES (5, 'a5', 'c5');");
  assert.deepEqual(f.scan().slice(-2).map(brief), [
    ['t', 'update', { id: 2n, a: 'a2', c: 'new' }],
    ['t', 'insert', { id: 5n, a: 'a5', c: 'c5' }],
  ]);
  assert.deepEqual(f.install().changed, [], 'up to date after one re-install');
});

test('ALTER TABLE RENAME COLUMN: capture follows the new name', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY, old TEXT);');
  sqlite3(f.path, "INSERT INTO t VALUES (1, 'v1'); ALTER TABLE t RENAME COLUMN old TO new;");
  sqlite3(f.path, "INSERT INTO t VALUES (2, 'v2');"); // SQLite rewrote our triggers: still captured
  assert.deepEqual(f.install().changed, ['t']);
  sqlite3(f.path, "UPDATE t SET new = 'v3' WHERE id = 1;");
  assert.deepEqual(f.scan().map(brief), [
    ['t', 'insert', { id: 1n, new: 'v1' }],
    ['t', 'insert', { id: 2n, new: 'v2' }],
    ['t', 'update', { id: 1n, new: 'v3' }],
  ]);
});

test('a table created after install, with rows written before its capture existed, is backfilled', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY);');
  sqlite3(
    f.path,
    "CREATE TABLE n (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO n VALUES (2, 'b'), (1, 'a'); UPDATE n SET v = 'a2' WHERE id = 1;" +
      'CREATE TABLE n2 (v TEXT); INSERT INTO n2 VALUES (NULL);',
  );
  const state = f.install();
  assert.deepEqual([...state.changed].sort(), ['n', 'n2']);
  assert.equal(state.backfilled, 3);
  sqlite3(f.path, "INSERT INTO n VALUES (3, 'c');");
  assert.deepEqual(f.scan().map(brief), [
    ['n', 'insert', { id: 1n, v: 'a2' }],
    ['n', 'insert', { id: 2n, v: 'b' }],
    ['n2', 'insert', { rowid: 1n, v: null }],
    ['n', 'insert', { id: 3n, v: 'c' }],
  ]);
  const again = f.install();
  assert.equal(again.backfilled, 0, 'backfilled once');
  assert.deepEqual(again.changed, []);
});

test('the first install does not backfill existing rows (they travel in the snapshot)', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);', {
    install: false,
  });
  assert.equal(f.install().backfilled, 0);
  assert.deepEqual(f.scan(), []);
});

test('a dropped table loses its triggers and, with nothing pending, its change log', () => {
  using f = captureFixture(
    'CREATE TABLE keep (id INTEGER PRIMARY KEY); CREATE TABLE gone (id INTEGER PRIMARY KEY);',
  );
  sqlite3(f.path, 'DROP TABLE gone;');
  const state = f.install();
  assert.deepEqual(state.changed, ['gone']);
  assert.deepEqual(
    state.tables.map((t) => t.name),
    ['keep'],
  );
  assert.ok(!exists(f.db, changeLogTable('gone')));
  for (const kind of TRIGGER_KINDS) assert.ok(!exists(f.db, triggerName('gone', kind)));
  assert.ok(exists(f.db, changeLogTable('keep')));
  assert.deepEqual(f.install().changed, []);
});

test('a dropped table with pending changes keeps its change log until they are handled, then loses it', () => {
  using f = captureFixture(
    'CREATE TABLE keep (id INTEGER PRIMARY KEY); CREATE TABLE gone (id INTEGER PRIMARY KEY);',
  );
  sqlite3(f.path, 'INSERT INTO gone VALUES (1); INSERT INTO keep VALUES (1); DROP TABLE gone;');
  assert.deepEqual(f.install().changed, ['gone']);
  assert.ok(
    exists(f.db, changeLogTable('gone')),
    'kept: a batch in flight may still mark its rows published',
  );
  for (const kind of TRIGGER_KINDS) assert.ok(!exists(f.db, triggerName('gone', kind)));

  const read = new Database(f.path, { readonly: true });
  try {
    const res = new ChangelogScanner(read).scan(0, 100);
    assert.deepEqual(res.changes.map(brief), [['keep', 'insert', { id: 1n }]]);
    assert.deepEqual(res.orphans, [1], 'the change of the dropped table is an orphan: nothing to publish');
  } finally {
    read.close();
  }
  // The publisher drops orphans from the global log; the next install then removes the log.
  f.db.prepare(`DELETE FROM ${q(GLOBAL_LOG)} WHERE id = 1`).run();
  assert.deepEqual(f.install().changed, ['gone']);
  assert.ok(!exists(f.db, changeLogTable('gone')));
  assert.deepEqual(f.install().changed, []);
});
