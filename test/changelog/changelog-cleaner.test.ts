/**
 * A cleanup pass (cleanupStep until it returns no next position) deletes
 * published rows (state 1) older than `cleanup_interval`, in every captured
 * table's change log; pending rows (state 0) and refused ones (state 2) are
 * never deleted, whatever their age. Each step looks at `span` change ids.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { changeLogTable, quoteIdent as q } from '../../src/cdc/names.ts';
import Database from 'better-sqlite3';
import { cleanupStep, cleanupTables, type CleanupPosition } from '../../src/changelog/changelog-cleaner.ts';
import { captureFixture, sqlite3 } from '../cdc/capture-fixture.ts';

/** One whole pass, as the node runs it: rows deleted by each step. */
function cleanupPass(db: Database.Database, olderThanMs: number, now = Date.now(), span = 1000): number[] {
  const tables = cleanupTables(db);
  const steps: number[] = [];
  for (let at: CleanupPosition | undefined; ;) {
    const step = cleanupStep(db, tables, { cutoff: now - olderThanMs, now }, span, at);
    steps.push(step.deleted);
    if ((at = step.next) === undefined) return steps;
  }
}
const sum = (steps: number[]) => steps.reduce((a, b) => a + b, 0);

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

  assert.equal(sum(cleanupPass(f.db, HOUR, now)), 3);
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
  assert.equal(sum(cleanupPass(f.db, HOUR, now)), 0, 'nothing left to clean');
  // The default clock: rows of this test are all recent.
  assert.equal(sum(cleanupPass(f.db, HOUR)), 0);
});

test('each step looks at `span` ids of one table; gaps and old pending or refused rows do not stall a pass', () => {
  using f = captureFixture(
    'CREATE TABLE a (id INTEGER PRIMARY KEY); CREATE TABLE b (id INTEGER PRIMARY KEY);',
  );
  const values = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => `(${from + i})`).join(', ');
  sqlite3(f.path, `INSERT INTO a VALUES ${values(1, 10)}; INSERT INTO b VALUES ${values(1, 3)};`);
  const old = Date.now() - 10_000;
  const log = (t: string) => q(changeLogTable(t));
  for (const t of ['a', 'b']) f.db.prepare(`UPDATE ${log(t)} SET state = 1, created_at = ?`).run(old);
  // a: 1 and 2 pending and refused at the bottom, 5-7 already gone (a gap), 10 written just now.
  f.db.prepare(`UPDATE ${log('a')} SET state = 0 WHERE id = 1`).run();
  f.db.prepare(`UPDATE ${log('a')} SET state = 2 WHERE id = 2`).run();
  f.db.prepare(`DELETE FROM ${log('a')} WHERE id BETWEEN 5 AND 7`).run();
  f.db.prepare(`UPDATE ${log('a')} SET created_at = ? WHERE id = 10`).run(Date.now());
  const ids = (t: string) =>
    f.db
      .prepare(`SELECT id FROM ${log(t)} ORDER BY id`)
      .pluck()
      .all();
  // a: ids 1-3 (3), 4-6 (4), 8-10 (8, 9; 10 is young), then b: 1-3; then the end of the pass.
  assert.deepEqual(cleanupPass(f.db, 1000, Date.now(), 3), [1, 1, 2, 3, 0]);
  assert.deepEqual(ids('a'), [1, 2, 10]);
  assert.deepEqual(ids('b'), []);
  // The next pass starts at the pending row again and stops at the young one without deleting.
  assert.deepEqual(cleanupPass(f.db, 1000, Date.now(), 3), [0, 0]);
});

/** Table a with rows 1-3 in its change log, all published 10 s ago. */
function threePublishedRows() {
  const f = captureFixture('CREATE TABLE a (id INTEGER PRIMARY KEY);');
  sqlite3(f.path, 'INSERT INTO a VALUES (1), (2), (3);');
  const now = Date.now();
  const log = q(changeLogTable('a'));
  f.db.prepare(`UPDATE ${log} SET state = 1, created_at = ?`).run(now - 10_000);
  return { f, now, log, [Symbol.dispose]: () => f[Symbol.dispose]() };
}

test('a step that stops at a young row leaves the rows after it to the next pass', () => {
  using fx = threePublishedRows();
  const { f, now, log } = fx;
  // The clock went back between rows 1 and 2: row 2 looks younger than row 3.
  f.db.prepare(`UPDATE ${log} SET created_at = ? WHERE id = 2`).run(now);
  assert.deepEqual(cleanupPass(f.db, 1000, now, 1), [1, 0]);
  assert.equal(sum(cleanupPass(f.db, 1000, now + 2000, 1)), 2, 'once row 2 is old too');
});

test('a row dated in the future (the clock was set back) does not hold up the rows after it', () => {
  using fx = threePublishedRows();
  const { f, now, log } = fx;
  f.db.prepare(`UPDATE ${log} SET created_at = ? WHERE id = 1`).run(now + 3_600_000);
  assert.equal(sum(cleanupPass(f.db, 1000, now, 1)), 2, 'rows 2 and 3 deleted');
  assert.deepEqual(
    f.db.prepare(`SELECT id FROM ${log}`).pluck().all(),
    [1],
    'the future-dated row waits until it is old',
  );
});

test('a step takes the write lock only when its range holds rows to delete', () => {
  using f = captureFixture('CREATE TABLE a (id INTEGER PRIMARY KEY);');
  sqlite3(f.path, 'INSERT INTO a VALUES (1), (2), (3), (4);');
  const now = Date.now();
  const log = q(changeLogTable('a'));
  // 1-2 pending (a backlog), 3-4 published: the application holds the write lock meanwhile.
  f.db
    .prepare(`UPDATE ${log} SET created_at = ?, state = CASE WHEN id > 2 THEN 1 ELSE 0 END`)
    .run(now - 10_000);
  const app = new Database(f.path, { timeout: 0 });
  try {
    app.prepare('BEGIN IMMEDIATE').run();
    f.db.pragma('busy_timeout = 0');
    const tables = cleanupTables(f.db);
    const window = { cutoff: now - 1000, now };
    const step = cleanupStep(f.db, tables, window, 2);
    assert.deepEqual(step, { deleted: 0, next: { table: 0, fromId: 3 } }, 'pending rows only: read, no lock');
    assert.throws(() => cleanupStep(f.db, tables, window, 2, step.next), /locked|busy/i);
    app.prepare('ROLLBACK').run();
    assert.equal(
      cleanupStep(f.db, tables, window, 2, step.next).deleted,
      2,
      'the same step again, once free',
    );
  } finally {
    app.close();
  }
});
