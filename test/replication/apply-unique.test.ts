/**
 * UNIQUE constraints other than the key, at the applier level: a change takes
 * its UNIQUE value from the row holding it (as the seed's INSERT OR REPLACE
 * does, in stream order on every node), and removes nothing else: not rows
 * outside a partial index's predicate, not rows whose NULLs do not collide.
 * Collisions on an expression index resolve too, instead of being dead-lettered.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { BatchApplier } from '../../src/replication/batch-applier.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { applierOptions, change, message } from './apply-messages.ts';

const dir = tempDir('hl-apply-unique-');
after(() => dir.remove());

let n = 0;
function fixture(schema: string) {
  const db = new Database(join(dir.path, `u${++n}.db`));
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = OFF');
  db.exec(schema);
  installCapture(db, new TableFilter([], []), { captureWrites: true });
  db.defaultSafeIntegers(true);
  const applier = new BatchApplier(db, applierOptions());
  let seq = 0;
  return {
    db,
    apply(...changes: Parameters<typeof change>[]) {
      const r = applier.apply(
        1,
        changes.map((c) => message(++seq, [change(...c)])),
      );
      assert.deepEqual(r.deadLettered, [], 'nothing dead-lettered');
      assert.equal(r.blocked, undefined);
      return r;
    },
    rows(sql: string) {
      return db.prepare(sql).raw(true).all() as unknown[][];
    },
  };
}

test('a full UNIQUE index: the change takes the value, the holder goes; NULLs never collide', () => {
  const f = fixture('CREATE TABLE u (id INTEGER PRIMARY KEY, email TEXT UNIQUE, v);');
  f.apply(
    ['insert', 'u', { id: 1n, email: 'x', v: 1n }],
    ['insert', 'u', { id: 2n, email: null, v: 2n }],
    ['insert', 'u', { id: 3n, email: null, v: 3n }],
  );
  const r = f.apply(['insert', 'u', { id: 4n, email: 'x', v: 4n }]);
  assert.equal(r.resolved.displaced, 1);
  assert.deepEqual(f.rows('SELECT id, email FROM u ORDER BY id'), [
    [2n, null],
    [3n, null],
    [4n, 'x'],
  ]);
  // An update of the key's own row keeps it in place (no self-displacement).
  f.apply(['update', 'u', { id: 4n, email: 'x', v: 40n }]);
  assert.deepEqual(f.rows('SELECT id, v FROM u WHERE id = 4'), [[4n, 40n]]);
  f.db.close();
});

test('a composite UNIQUE: only the row holding the same combination goes', () => {
  const f = fixture(
    'CREATE TABLE s (day INTEGER, slot INTEGER, owner TEXT, PRIMARY KEY (day, slot), UNIQUE (owner, day)) WITHOUT ROWID;',
  );
  f.apply(
    ['insert', 's', { day: 1n, slot: 1n, owner: 'ann' }],
    ['insert', 's', { day: 2n, slot: 1n, owner: 'ann' }],
  );
  const r = f.apply(['insert', 's', { day: 1n, slot: 2n, owner: 'ann' }]);
  assert.equal(r.resolved.displaced, 1);
  assert.deepEqual(f.rows('SELECT day, slot, owner FROM s ORDER BY day, slot'), [
    [1n, 2n, 'ann'],
    [2n, 1n, 'ann'],
  ]);
  f.db.close();
});

test('a partial UNIQUE index: rows outside its predicate are not removed', () => {
  // Soft deletes: an email is unique among live rows only.
  const f = fixture(`
    CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
    CREATE UNIQUE INDEX live_email ON users (email) WHERE deleted = 0;
  `);
  f.apply(
    ['insert', 'users', { id: 1n, email: 'x', deleted: 1n }],
    ['insert', 'users', { id: 2n, email: 'x', deleted: 0n }],
  );
  f.apply(['insert', 'users', { id: 3n, email: 'x', deleted: 0n }]);
  assert.deepEqual(f.rows('SELECT id, email, deleted FROM users ORDER BY id'), [
    [1n, 'x', 1n],
    [3n, 'x', 0n],
  ]);
  // A deleted row never collides.
  f.apply(['insert', 'users', { id: 4n, email: 'x', deleted: 1n }]);
  assert.equal(f.rows('SELECT count(*) FROM users')[0]![0], 3n);
  f.db.close();
});

test('an expression UNIQUE index: a collision resolves like the others instead of being dead-lettered', () => {
  const f = fixture(`
    CREATE TABLE people (id INTEGER PRIMARY KEY, email TEXT, note TEXT);
    CREATE UNIQUE INDEX people_email_ci ON people (lower(email));
  `);
  f.apply(['insert', 'people', { id: 1n, email: 'Ann@X', note: 'first' }]);
  const r = f.apply(['insert', 'people', { id: 2n, email: 'ann@x', note: 'second' }]);
  assert.ok(r.resolved.displaced >= 1);
  assert.deepEqual(f.rows('SELECT id, email, note FROM people ORDER BY id'), [[2n, 'ann@x', 'second']]);
  // The key's own row, updated while another row holds the expression value.
  f.apply(['insert', 'people', { id: 3n, email: 'bob', note: 'b' }]);
  f.apply(['update', 'people', { id: 3n, email: 'ANN@x', note: 'took it' }]);
  assert.deepEqual(f.rows('SELECT id, email, note FROM people ORDER BY id'), [[3n, 'ANN@x', 'took it']]);
  f.db.close();
});
