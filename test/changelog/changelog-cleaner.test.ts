/**
 * cleanupChangeLogs deletes published rows (state 1) older than
 * `cleanup_interval`, in every captured table's change log; pending rows
 * (state 0) and refused ones (state 2) are never deleted, whatever their age.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { changeLogTable, quoteIdent as q } from '../../src/cdc/names.ts';
import { cleanupChangeLogs } from '../../src/changelog/changelog-cleaner.ts';
import { captureFixture, sqlite3 } from '../cdc/capture-fixture.ts';

test('deletes only published rows older than the interval, never pending or refused ones', () => {
  using f = captureFixture(
    'CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE "b b" (k TEXT PRIMARY KEY);',
  );
  sqlite3(
    f.path,
    'INSERT INTO a VALUES (1), (2), (3), (4), (5), (6);' + `INSERT INTO "b b" VALUES ('x'), ('y');`,
  );
  const now = Date.now();
  const HOUR = 3_600_000;
  // [change id, state, age]: old and new rows of each state.
  const rows: [number, number, number][] = [
    [1, 1, 2 * HOUR], // published, old: deleted
    [2, 1, 0], // published, recent: kept
    [3, 0, 2 * HOUR], // pending, old: kept
    [4, 2, 2 * HOUR], // refused, old: kept
    [5, 1, HOUR + 1000], // published, just past the interval: deleted
    [6, 0, 0],
  ];
  const setA = f.db.prepare(`UPDATE ${q(changeLogTable('a'))} SET state = ?, created_at = ? WHERE id = ?`);
  for (const [id, state, age] of rows) setA.run(state, now - age, id);
  f.db
    .prepare(`UPDATE ${q(changeLogTable('b b'))} SET state = 1, created_at = ? WHERE id = 1`)
    .run(now - 2 * HOUR);

  assert.equal(cleanupChangeLogs(f.db, HOUR, now), 3);
  assert.deepEqual(
    f.db
      .prepare(`SELECT id FROM ${q(changeLogTable('a'))} ORDER BY id`)
      .pluck()
      .all(),
    [2, 3, 4, 6],
  );
  assert.deepEqual(
    f.db
      .prepare(`SELECT id FROM ${q(changeLogTable('b b'))}`)
      .pluck()
      .all(),
    [2],
  );
  assert.equal(cleanupChangeLogs(f.db, HOUR, now), 0, 'nothing left to clean');
  // The default clock: rows of this test are all recent.
  assert.equal(cleanupChangeLogs(f.db, HOUR), 0);
});

test('deletes at most `limit` rows per call, across tables, so callers clean in short transactions', () => {
  using f = captureFixture(
    'CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER PRIMARY KEY);',
  );
  sqlite3(f.path, 'INSERT INTO a VALUES (1), (2), (3), (4), (5); INSERT INTO b VALUES (1), (2), (3);');
  const old = Date.now() - 10_000;
  for (const t of ['a', 'b'])
    f.db.prepare(`UPDATE ${q(changeLogTable(t))} SET state = 1, created_at = ?`).run(old);
  const left = () =>
    ['a', 'b'].reduce(
      (n, t) =>
        n +
        (f.db
          .prepare(`SELECT count(*) FROM ${q(changeLogTable(t))}`)
          .pluck()
          .get() as number),
      0,
    );
  assert.equal(cleanupChangeLogs(f.db, 1000, Date.now(), 3), 3);
  assert.equal(left(), 5);
  assert.equal(cleanupChangeLogs(f.db, 1000, Date.now(), 3), 3, 'the rest of a, then b');
  assert.equal(cleanupChangeLogs(f.db, 1000, Date.now(), 3), 2, 'fewer than the limit: done');
  assert.equal(left(), 0);
});
