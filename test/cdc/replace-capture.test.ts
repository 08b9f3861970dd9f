/**
 * `OR REPLACE` deletes the rows holding a UNIQUE value without firing delete
 * triggers: capture logs those deletes itself, so replicas drop the same rows
 * (and nothing else: not for OR IGNORE, nor for an upsert that updates the holder).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { brief, captureFixture, sqlite3 } from './capture-fixture.ts';

const SCHEMA = 'CREATE TABLE u (id INTEGER PRIMARY KEY, email TEXT UNIQUE, v INTEGER);';

test('INSERT OR REPLACE and UPDATE OR REPLACE log the delete of the row they replaced', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(f.path, "INSERT INTO u VALUES (1, 'a', 1), (2, 'b', 2), (3, 'c', 3);");
  f.db.exec('DELETE FROM __harmonylite__u_change_log; DELETE FROM __harmonylite___global_change_log;');
  sqlite3(
    f.path,
    "INSERT OR REPLACE INTO u VALUES (4, 'a', 4); UPDATE OR REPLACE u SET email = 'b' WHERE id = 3;",
  );
  assert.deepEqual(f.scan().map(brief), [
    ['u', 'delete', { id: 1n, email: null, v: null }],
    ['u', 'insert', { id: 4n, email: 'a', v: 4n }],
    ['u', 'delete', { id: 2n, email: null, v: null }],
    ['u', 'update', { id: 3n, email: 'b', v: 3n }],
  ]);
  assert.deepEqual(f.db.prepare('SELECT id FROM u ORDER BY id').pluck().all(), [3, 4]);
});

test('OR IGNORE, a failed INSERT and an upsert that updates the holder log no delete', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(f.path, "INSERT INTO u VALUES (1, 'a', 1);");
  f.db.exec('DELETE FROM __harmonylite__u_change_log; DELETE FROM __harmonylite___global_change_log;');
  sqlite3(
    f.path,
    "INSERT OR IGNORE INTO u VALUES (2, 'a', 2); INSERT INTO u VALUES (3, 'a', 3) ON CONFLICT (email) DO UPDATE SET v = 9;",
  );
  assert.deepEqual(f.scan().map(brief), [['u', 'update', { id: 1n, email: 'a', v: 9n }]]);
  const r = spawnSync('sqlite3', [f.path, "INSERT INTO u VALUES (5, 'a', 5);"], { encoding: 'utf8' });
  assert.match(r.stderr, /UNIQUE constraint failed/u);
  assert.equal(f.scan().length, 1, 'the failed statement logged nothing');
});
