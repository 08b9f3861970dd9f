/**
 * `-cleanup` removes every trigger and table of ours and nothing else.
 *
 * What is ours: the internal tables by exact name, change logs named
 * `__harmonylite__<table>_change_log`, and triggers named
 * `__harmonylite__<table>_change_log_on_<kind>`, matched with GLOB (`_` is
 * literal). The `__harmonylite__` prefix is reserved, but a user table in it
 * with any other name (`__harmonylite__notours`) is left alone, and so is
 * everything HarmonyLite's `LIKE '__harmonylite__%'` would wrongly hit
 * (`xxharmonylitexx_data`, `a_harmonylite_b_change_log`: `_` is a LIKE wildcard).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { removeCapture } from '../../src/cdc/capture-installer.ts';
import { INTERNAL_TABLES_SQL } from '../../src/cdc/internal-tables.ts';
import { INTERNAL_TABLES, KEPT_BY_CLEANUP } from '../../src/cdc/names.ts';
import { defaultConfig } from '../../src/config/config.ts';
import { CLI_ENTRY, REPO_ROOT, writeConfigFile } from '../helpers/node-harness.ts';
import { brief, captureFixture, sqlite3 } from './capture-fixture.ts';

const USER_SCHEMA = `
  CREATE TABLE items (id INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT);
  CREATE TABLE xxharmonylitexx_data (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE a_harmonylite_b_change_log (id INTEGER PRIMARY KEY, type TEXT, created_at INTEGER, state INTEGER);
  CREATE TABLE __harmonylite__notours (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE audit (msg TEXT);
  CREATE INDEX xxharmonylitexx_idx ON xxharmonylitexx_data (v);
  CREATE VIEW xxharmonylitexx_view AS SELECT * FROM xxharmonylitexx_data;
  CREATE TRIGGER xxharmonylitexx_change_log_on_insert AFTER INSERT ON items BEGIN INSERT INTO audit VALUES ('ins'); END;
  INSERT INTO items (v) VALUES ('kept');
  INSERT INTO xxharmonylitexx_data VALUES (1, 'kept');
  INSERT INTO a_harmonylite_b_change_log VALUES (1, 'insert', 0, 0);
  INSERT INTO __harmonylite__notours VALUES (1, 'kept');
`;

/** Every schema object with its SQL, SQLite's internal ones excluded. */
function objects(db: Database.Database): [string, string, string | null][] {
  return db
    .prepare(
      "SELECT type, name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
    )
    .raw(true)
    .all() as [string, string, string | null][];
}

/**
 * The user's objects before capture, and the replicated-state index that
 * cleanup keeps (the next start finds what was written without capture): what
 * must remain after cleanup.
 */
function userObjects(schema: string): [string, string, string | null][] {
  const db = new Database(':memory:');
  try {
    db.exec(schema);
    for (const sql of INTERNAL_TABLES_SQL) {
      if (KEPT_BY_CLEANUP.some((t) => sql.includes(`"${t}"`))) db.exec(sql);
    }
    return objects(db).map(([type, name, sql]) => [
      type,
      name,
      sql?.replace('CREATE TABLE IF NOT EXISTS', 'CREATE TABLE') ?? null,
    ]);
  } finally {
    db.close();
  }
}

function userData(db: Database.Database): unknown[] {
  return [
    db.prepare('SELECT * FROM items').raw(true).all(),
    db.prepare('SELECT * FROM xxharmonylitexx_data').raw(true).all(),
    db.prepare('SELECT * FROM a_harmonylite_b_change_log').raw(true).all(),
    db.prepare('SELECT * FROM __harmonylite__notours').raw(true).all(),
    db.prepare("SELECT name, seq FROM sqlite_sequence WHERE name = 'items'").raw(true).all(),
  ];
}

test("the user tables in this test are ones HarmonyLite's LIKE pattern wrongly matches", () => {
  const db = new Database(':memory:');
  db.exec(USER_SCHEMA);
  const like = db
    .prepare("SELECT name FROM sqlite_schema WHERE name LIKE '__harmonylite__%' ORDER BY name")
    .pluck()
    .all();
  db.close();
  assert.deepEqual(like, [
    '__harmonylite__notours',
    'a_harmonylite_b_change_log',
    'xxharmonylitexx_change_log_on_insert',
    'xxharmonylitexx_data',
    'xxharmonylitexx_idx',
    'xxharmonylitexx_view',
  ]);
});

test('removeCapture drops every trigger and table of ours and nothing else', () => {
  using f = captureFixture(USER_SCHEMA);
  const state = f.install();
  assert.deepEqual(
    state.tables.map((t) => t.name),
    ['a_harmonylite_b_change_log', 'audit', 'items', 'xxharmonylitexx_data'],
  );
  sqlite3(f.path, "INSERT INTO items (v) VALUES ('logged');");
  assert.deepEqual(
    f.scan().map((c) => c.table),
    ['items', 'audit'],
    "the insert and the user trigger's insert into audit were captured",
  );
  const before = userData(f.db);

  const removed = removeCapture(f.db);
  assert.deepEqual(removed, { triggers: 12, tables: 4 + INTERNAL_TABLES.length - KEPT_BY_CLEANUP.length });
  assert.deepEqual(objects(f.db), userObjects(USER_SCHEMA));
  assert.deepEqual(userData(f.db), before);
  assert.deepEqual(
    f.db.prepare('SELECT name FROM sqlite_sequence ORDER BY name').pluck().all(),
    ['items'],
    'our AUTOINCREMENT counters went with our tables',
  );

  sqlite3(f.path, "INSERT INTO items (v) VALUES ('after cleanup'); DELETE FROM xxharmonylitexx_data;");
  assert.deepEqual(removeCapture(f.db), { triggers: 0, tables: 0 }, 'a second cleanup finds nothing');
  // Found against the kept index, and published: what was written while capture was absent, and
  // the pending changes the cleanup dropped (the insert 'logged' and the audit row it wrote).
  const again = f.install();
  assert.equal(again.backfilled, 0);
  assert.equal(again.escaped, 5);
  sqlite3(f.path, "UPDATE items SET v = 'captured again' WHERE id = 1;");
  assert.deepEqual(f.scan().map(brief), [
    ['audit', 'insert', { rowid: 2n, msg: 'ins' }],
    ['audit', 'insert', { rowid: 3n, msg: 'ins' }],
    ['items', 'insert', { id: 2n, v: 'logged' }],
    ['items', 'insert', { id: 3n, v: 'after cleanup' }],
    ['xxharmonylitexx_data', 'delete', { id: 1n, v: null }],
    ['items', 'update', { id: 1n, v: 'captured again' }],
  ]);
});

test('an install never drops a user table that merely sits in our namespace', () => {
  using f = captureFixture(
    'CREATE TABLE t (id INTEGER PRIMARY KEY); CREATE TABLE __harmonylite__mine_change_log (k TEXT); INSERT INTO __harmonylite__mine_change_log VALUES (1);',
  );
  assert.deepEqual(f.install().changed, []);
  assert.equal(f.db.prepare('SELECT count(*) FROM __harmonylite__mine_change_log').pluck().get(), 1);
});

test('harmonylite -cleanup -force exits 0 and leaves only the user objects, pending changes included', () => {
  using f = captureFixture(USER_SCHEMA);
  sqlite3(f.path, "INSERT INTO items (v) VALUES ('pending');");
  const before = userData(f.db);
  f.db.close();
  const config = defaultConfig();
  config.db_path = f.path;
  const file = writeConfigFile(config, join(f.dir, 'harmonylite.toml'));
  const r = spawnSync(
    process.execPath,
    ['--import', 'tsx', CLI_ENTRY, '-config', file, '-cleanup', '-force'],
    {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 30_000,
    },
  );
  assert.equal(r.status, 0, `exit ${r.status}; stdout: ${r.stdout}; stderr: ${r.stderr}`);
  const db = new Database(f.path, { readonly: true });
  try {
    assert.deepEqual(objects(db), userObjects(USER_SCHEMA));
    assert.deepEqual(userData(db), before);
  } finally {
    db.close();
  }
});
