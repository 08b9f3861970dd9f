/**
 * Renames seen by the capture install: exact from the triggers SQLite rewrites
 * (`ALTER TABLE … RENAME COLUMN` / `RENAME TO`), inferred for a rebuilt table
 * (`sqlite-utils transform --rename`); drops recorded as such; a re-created
 * name no longer retired.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { RetiredNames } from '../../src/cdc/retired-names.ts';
import { captureFixture, sqlite3 } from './capture-fixture.ts';

test('RENAME COLUMN and RENAME TO are recorded exactly, from the triggers SQLite rewrote', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT);');
  // Not in place (a column dropped as well): only the rewritten trigger tells the rename.
  sqlite3(
    f.path,
    'ALTER TABLE t RENAME COLUMN a TO "a ""q"""; ALTER TABLE t RENAME TO "t 2"; ALTER TABLE "t 2" ADD COLUMN c TEXT;',
  );
  const state = f.install();
  assert.deepEqual([...state.retired].sort(), ['t -> t 2', 't 2.a -> a "q"']);
  const names = new RetiredNames(f.db);
  assert.equal(names.table('t'), 't 2');
  assert.equal(names.column('t 2', 'a'), 'a "q"');
  assert.equal(names.column('t 2', 'b'), undefined);
  assert.equal(names.table('never'), undefined);
});

test('a table rebuilt with one column replaced in place counts as a rename; DROP TABLE as a drop', () => {
  using f = captureFixture(
    'CREATE TABLE p (id INTEGER PRIMARY KEY, name TEXT, age INTEGER); CREATE TABLE gone (id INTEGER PRIMARY KEY);',
  );
  const r = spawnSync('sqlite-utils', ['transform', f.path, 'p', '--rename', 'age', 'years'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  sqlite3(f.path, 'DROP TABLE gone;');
  f.install();
  const names = new RetiredNames(f.db);
  assert.equal(names.column('p', 'age'), 'years');
  assert.equal(names.table('gone'), null);
  // Re-created: its changes apply to it again.
  sqlite3(f.path, 'CREATE TABLE gone (id INTEGER PRIMARY KEY);');
  f.install();
  assert.equal(names.table('gone'), undefined);
});
