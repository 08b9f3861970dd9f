/**
 * Installing capture is idempotent: a second run rewrites nothing (so it does
 * not bump schema_version and wake the schema watcher again), and a restart
 * (close, reopen, install) neither duplicates triggers nor loses or repeats
 * pending changes.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { openDatabase } from '../../src/sqlite/open-database.ts';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { brief, captureFixture, digest as fixtureDigest, sqlite3 } from './capture-fixture.ts';

const SCHEMA =
  'CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT);' +
  'CREATE TABLE b (k TEXT, n INTEGER, PRIMARY KEY (k, n)) WITHOUT ROWID;' +
  'CREATE TABLE c (free TEXT);';

/** Every object of the schema with its SQL: equal means nothing was rewritten. */
function schemaSnapshot(f: ReturnType<typeof captureFixture>): unknown[] {
  return f.db
    .prepare('SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name')
    .raw(true)
    .all();
}

test('installing twice changes nothing: same triggers, nothing changed, schema_version unchanged', () => {
  using f = captureFixture(SCHEMA, { install: false });
  const first = f.install();
  assert.deepEqual([...first.changed].sort(), ['a', 'b', 'c']);
  const version = f.db.pragma('schema_version', { simple: true });
  const before = schemaSnapshot(f);
  const second = f.install();
  assert.deepEqual(second.changed, []);
  assert.equal(second.backfilled, 0);
  assert.equal(f.db.pragma('schema_version', { simple: true }), version);
  assert.deepEqual(schemaSnapshot(f), before);
  assert.equal(
    f.db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'").pluck().get(),
    9,
    'three triggers per table, no duplicates',
  );
});

test('a restart neither duplicates nor loses pending changes', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(
    f.path,
    "INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES ('k', 1); INSERT INTO c VALUES ('free');",
  );
  const pending = f.scan().map(brief);
  assert.equal(pending.length, 3);
  const before = schemaSnapshot(f);
  f.db.close();

  // Written while the daemon is down: captured by the triggers already in the file.
  sqlite3(f.path, "UPDATE a SET v = 'y'; DELETE FROM c;");

  const db = openDatabase(f.path, { busyTimeoutMs: 5000, readonly: false });
  try {
    const state = installCapture(db, new TableFilter([], []), { captureWrites: true });
    assert.deepEqual(state.changed, []);
    assert.equal(state.backfilled, 0, 'tables captured before the restart are not backfilled again');
    assert.deepEqual(
      db.prepare('SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name').raw(true).all(),
      before,
    );
    sqlite3(f.path, "INSERT INTO a VALUES (2, 'after restart');");
  } finally {
    db.close();
  }
  assert.deepEqual(f.scan().map(brief), [
    ...pending,
    ['a', 'update', { id: 1n, v: 'y' }],
    ['c', 'delete', { rowid: 1n, free: 'free' }],
    ['a', 'insert', { id: 2n, v: 'after restart' }],
  ]);
});

test('captureWrites false (publish = false) removes the triggers and keeps the logs; true brings them back', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(f.path, "INSERT INTO a VALUES (1, 'x');");
  const off = installCapture(f.db, new TableFilter([], []), { captureWrites: false });
  assert.deepEqual([...off.changed].sort(), ['a', 'b', 'c']);
  assert.equal(f.db.prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'").pluck().get(), 0);
  sqlite3(f.path, "INSERT INTO a VALUES (2, 'not captured');");
  const on = f.install();
  assert.deepEqual([...on.changed].sort(), ['a', 'b', 'c']);
  assert.equal(on.backfilled, 0);
  // Row 2, written without capture, is logged (row 1's pending change already holds its values).
  assert.equal(on.escaped, 1);
  sqlite3(f.path, "INSERT INTO a VALUES (3, 'captured');");
  assert.deepEqual(
    f.scan().map((c) => c.key),
    [[1n], [2n], [3n]],
  );
});

test('building the index over a large existing table reports its progress every 100,000 rows', () => {
  using f = captureFixture(SCHEMA, { install: false });
  f.db.exec(
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250000) INSERT INTO a SELECT i, 'v' FROM n",
  );
  const seen: [string, number][] = [];
  const state = installCapture(f.db, new TableFilter([], []), {
    captureWrites: true,
    index: { digest: fixtureDigest, nodeId: 1, progress: (table, rows) => seen.push([table, rows]) },
  });
  assert.equal(state.indexed, 250_000);
  assert.deepEqual(seen, [
    ['a', 100_000],
    ['a', 200_000],
  ]);
});
