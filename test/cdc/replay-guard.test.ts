/**
 * Invariant 6: writes made inside a transaction that holds a row in the replay
 * guard table (the applier's) are not captured; the guard row is deleted before
 * commit, so every other connection always sees the table empty and keeps being
 * captured.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { quoteIdent, REPLAY_GUARD } from '../../src/cdc/names.ts';
import { brief, captureFixture, python, sqlite3 } from './capture-fixture.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);';
const GUARD = quoteIdent(REPLAY_GUARD);

test('writes inside a transaction holding the guard row are not logged; writes after it are', () => {
  using f = captureFixture(SCHEMA);
  const { db } = f;
  db.transaction(() => {
    db.prepare(`INSERT INTO ${GUARD} (id) VALUES (1)`).run();
    db.prepare("INSERT INTO items VALUES (1, 'replicated')").run();
    db.prepare("UPDATE items SET name = 'replicated 2' WHERE id = 1").run();
    db.prepare("INSERT INTO items VALUES (2, 'replicated')").run();
    db.prepare('DELETE FROM items WHERE id = 2').run();
    db.prepare("INSERT OR REPLACE INTO items VALUES (1, 'replaced')").run();
    db.prepare(`DELETE FROM ${GUARD}`).run();
    // The guard cleared, the rest of the same transaction is captured again.
    db.prepare("INSERT INTO items VALUES (3, 'local, same transaction')").run();
  }).immediate();
  assert.equal(db.prepare(`SELECT count(*) FROM ${GUARD}`).pluck().get(), 0);
  sqlite3(f.path, "INSERT INTO items VALUES (4, 'shell'); UPDATE items SET name = 'shell' WHERE id = 1;");
  db.prepare("INSERT INTO items VALUES (5, 'daemon connection, after')").run();
  assert.deepEqual(f.scan().map(brief), [
    ['items', 'insert', { id: 3n, name: 'local, same transaction' }],
    ['items', 'insert', { id: 4n, name: 'shell' }],
    ['items', 'update', { id: 1n, name: 'shell' }],
    ['items', 'insert', { id: 5n, name: 'daemon connection, after' }],
  ]);
  assert.equal(
    db.prepare('SELECT group_concat(id) FROM items ORDER BY id').pluck().get(),
    '1,3,4,5',
    'the guarded writes themselves were applied',
  );
});

test('other connections never see the guard row set, even while the applier holds it', () => {
  using f = captureFixture(SCHEMA);
  const { db } = f;
  const reader = new Database(f.path);
  try {
    db.prepare('BEGIN IMMEDIATE').run();
    db.prepare(`INSERT INTO ${GUARD} (id) VALUES (1)`).run();
    db.prepare("INSERT INTO items VALUES (1, 'replicated')").run();
    // Mid-transaction: another better-sqlite3 connection, the shell and Python all see it empty.
    assert.equal(reader.prepare(`SELECT count(*) FROM ${GUARD}`).pluck().get(), 0);
    assert.equal(sqlite3(f.path, `SELECT count(*) FROM ${GUARD};`).trim(), '0');
    assert.equal(python(f.path, [[`SELECT count(*) FROM ${GUARD}`]]).trim(), '[[0]]');
    db.prepare(`DELETE FROM ${GUARD}`).run();
    db.prepare('COMMIT').run();
  } finally {
    if (db.inTransaction) db.prepare('ROLLBACK').run();
  }
  assert.equal(reader.prepare(`SELECT count(*) FROM ${GUARD}`).pluck().get(), 0);
  reader.prepare("INSERT INTO items VALUES (2, 'other connection')").run();
  reader.close();
  assert.deepEqual(f.scan().map(brief), [['items', 'insert', { id: 2n, name: 'other connection' }]]);
});

test('a rolled-back guarded transaction leaves neither the guard row nor a change behind', () => {
  using f = captureFixture(SCHEMA);
  const { db } = f;
  assert.throws(() =>
    db
      .transaction(() => {
        db.prepare(`INSERT INTO ${GUARD} (id) VALUES (1)`).run();
        db.prepare("INSERT INTO items VALUES (1, 'replicated')").run();
        throw new Error('apply failed');
      })
      .immediate(),
  );
  assert.equal(db.prepare(`SELECT count(*) FROM ${GUARD}`).pluck().get(), 0);
  sqlite3(f.path, "INSERT INTO items VALUES (1, 'shell');");
  assert.deepEqual(f.scan().map(brief), [['items', 'insert', { id: 1n, name: 'shell' }]]);
});
