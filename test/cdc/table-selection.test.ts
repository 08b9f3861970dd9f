/**
 * Which tables are captured: virtual tables (FTS5, R*Tree) and their shadow
 * tables are skipped with a reason and never abort the install; SQLite's own
 * tables and ours are never captured; `include_tables` / `exclude_tables`
 * globs select among the rest, and narrowing them later removes the triggers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { openDatabase } from '../../src/sqlite/open-database.ts';
import { brief, captureFixture, sqlite3, triggersOn } from './capture-fixture.ts';

test('FTS5 and R*Tree tables and their shadow tables are skipped with a reason; install goes on', () => {
  using f = captureFixture(
    'CREATE TABLE docs (id INTEGER PRIMARY KEY, body TEXT);' +
      'CREATE VIRTUAL TABLE docs_fts USING fts5(body);' +
      'CREATE VIRTUAL TABLE boxes USING rtree(id, min_x, max_x);' +
      'CREATE TABLE ai (id INTEGER PRIMARY KEY AUTOINCREMENT);', // creates sqlite_sequence
    { install: false },
  );
  const state = f.install();
  assert.deepEqual(
    state.tables.map((t) => t.name),
    ['ai', 'docs'],
  );
  const skipped = new Map(state.skipped.map((s) => [s.name, s.reason]));
  assert.equal(skipped.get('docs_fts'), 'virtual table');
  assert.equal(skipped.get('boxes'), 'virtual table');
  for (const shadow of [
    'docs_fts_data',
    'docs_fts_idx',
    'docs_fts_content',
    'docs_fts_docsize',
    'docs_fts_config',
  ])
    assert.equal(skipped.get(shadow), 'shadow table of a virtual table', shadow);
  for (const shadow of ['boxes_node', 'boxes_parent', 'boxes_rowid'])
    assert.equal(skipped.get(shadow), 'shadow table of a virtual table', shadow);
  assert.ok(!skipped.has('sqlite_sequence'), "SQLite's own tables are neither captured nor reported");
  for (const name of [...skipped.keys(), 'sqlite_sequence'])
    assert.deepEqual(triggersOn(f.db, name), [], `no triggers on ${name}`);

  sqlite3(
    f.path,
    "INSERT INTO docs VALUES (1, 'hello'); INSERT INTO docs_fts (rowid, body) VALUES (1, 'hello');" +
      'INSERT INTO boxes VALUES (1, 0, 1);',
  );
  assert.deepEqual(f.scan().map(brief), [['docs', 'insert', { id: 1n, body: 'hello' }]]);
  assert.equal(sqlite3(f.path, "SELECT rowid FROM docs_fts WHERE docs_fts MATCH 'hello';").trim(), '1');
});

test('include_tables / exclude_tables globs select the tables to capture', () => {
  using f = captureFixture(
    ['users', 'user_roles', 'orders', 'audit_2024', 'audit_2025', 'audit_20245', 'tmp.x', 'tmpax']
      .map((t) => `CREATE TABLE "${t}" (id INTEGER PRIMARY KEY);`)
      .join(''),
    { install: false },
  );
  const state = f.install(['user*', 'orders', 'audit_202?', 'tmp.x'], ['audit_2025', '*roles']);
  // `?` is one character, `*` any run; everything else is literal (the `.` of tmp.x too).
  assert.deepEqual(
    state.tables.map((t) => t.name),
    ['audit_2024', 'orders', 'tmp.x', 'users'],
  );
  assert.deepEqual(state.skipped, [], 'tables excluded by configuration are not reported as skipped');
  sqlite3(
    f.path,
    'INSERT INTO users VALUES (1); INSERT INTO user_roles VALUES (1); INSERT INTO tmpax VALUES (1);',
  );
  assert.deepEqual(f.scan().map(brief), [['users', 'insert', { id: 1n }]]);

  // Narrowing the selection removes the capture of tables no longer selected.
  const narrowed = f.install(['users'], []);
  assert.deepEqual(
    narrowed.tables.map((t) => t.name),
    ['users'],
  );
  assert.deepEqual([...narrowed.changed].sort(), ['audit_2024', 'orders', 'tmp.x']);
  assert.deepEqual(triggersOn(f.db, 'orders'), []);
  assert.equal(triggersOn(f.db, 'users').length, 3);
});

test('a table named _global is skipped: its change log would be our global log, and its writes would fail', () => {
  using f = captureFixture(
    'CREATE TABLE _global (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE t (id INTEGER PRIMARY KEY);',
    {
      install: false,
    },
  );
  const state = f.install();
  assert.deepEqual(
    state.tables.map((t) => t.name),
    ['t'],
  );
  assert.match(
    state.skipped.find((s) => s.name === '_global')?.reason ?? '',
    /__harmonylite___global_change_log/,
  );
  sqlite3(f.path, "INSERT INTO _global VALUES (1, 'x'); INSERT INTO t VALUES (1);");
  assert.deepEqual(f.scan().map(brief), [['t', 'insert', { id: 1n }]]);
  assert.deepEqual(f.install().changed, []);
});

test("the shadow tables of a virtual table whose module is not loaded here (an app's extension) are skipped", () => {
  using f = captureFixture(
    'CREATE TABLE vec_items_chunks (id INTEGER PRIMARY KEY, data BLOB);' +
      'CREATE TABLE vec_items_rowids (rowid INTEGER PRIMARY KEY, id);' +
      'CREATE TABLE vec_itemsx (id INTEGER PRIMARY KEY);',
    { install: false },
  );
  // What an application that loads sqlite-vec leaves in the schema; this connection has no vec0 module.
  f.db.close();
  sqlite3(
    f.path,
    "PRAGMA writable_schema = ON; INSERT INTO sqlite_schema VALUES ('table', 'vec_items', 'vec_items', 0, 'CREATE VIRTUAL TABLE vec_items USING vec0(embedding float[4])');",
  );
  const db = openDatabase(f.path, { busyTimeoutMs: 5000, readonly: false });
  try {
    const state = installCapture(db, new TableFilter([], []), { captureWrites: true });
    assert.deepEqual(
      state.tables.map((t) => t.name),
      ['vec_itemsx'],
    );
    assert.deepEqual(state.skipped.map((s) => s.name).sort(), [
      'vec_items',
      'vec_items_chunks',
      'vec_items_rowids',
    ]);
    assert.match(state.skipped.find((s) => s.name === 'vec_items_chunks')!.reason, /module is not loaded/);
  } finally {
    db.close();
  }
});
