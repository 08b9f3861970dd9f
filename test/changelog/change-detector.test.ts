/**
 * ChangeDetector: a commit by another process (the sqlite3 shell) wakes the
 * listeners at once through the `-wal` watch, and also where file watching is
 * unavailable, through `PRAGMA data_version` polling; `polling_interval` wakes
 * them regardless; `schemaChanged()` reports DDL made by other connections.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { ChangeDetector, type ChangeDetectorOptions } from '../../src/changelog/change-detector.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { captureFixture, sqlite3 } from '../cdc/capture-fixture.ts';

const HOUR_MS = 3_600_000;

/** A detector on a read-only connection, with a counter of listener calls; closed by the disposer. */
function detector(path: string, options: Partial<ChangeDetectorOptions> = {}) {
  const read = new Database(path, { readonly: true });
  const d = new ChangeDetector({
    dbPath: path,
    db: read,
    safetyPollMs: HOUR_MS,
    pollingIntervalMs: 0,
    ...options,
  });
  const calls = { count: 0 };
  d.onChange(() => calls.count++);
  return {
    d,
    calls,
    [Symbol.dispose]() {
      d.close();
      read.close();
    },
  };
}

test('a commit by the sqlite3 shell wakes listeners through the -wal watch, without polling', async () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY);');
  using det = detector(f.path); // safety poll once an hour: only the watch can wake us
  det.d.open();
  sqlite3(f.path, 'INSERT INTO t VALUES (1);'); // returns once the shell committed and exited
  const t0 = performance.now();
  await waitFor('a wake-up from the -wal watch', () => det.calls.count > 0, {
    timeoutMs: 2000,
    intervalMs: 5,
  });
  const ms = performance.now() - t0;
  assert.ok(ms < 1000, `woken ${ms.toFixed(0)} ms after the commit`);
});

test('where the directory cannot be watched, data_version polling wakes listeners on commits only', async () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY);');
  // The watch of a directory that does not exist fails: only polling is left.
  using det = detector(f.path, { dbPath: join(f.dir, 'no such dir', 'app.db'), safetyPollMs: 20 });
  det.d.open();
  await waitFor('the first poll (baseline)', () => det.calls.count > 0, { timeoutMs: 2000 });
  det.calls.count = 0;
  // Quiet period of ~10 polls: nothing committed, nothing reported (the only fixed wait: proving an absence).
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(det.calls.count, 0, 'no wake-up without a commit');
  sqlite3(f.path, 'INSERT INTO t VALUES (1);');
  await waitFor('a wake-up from data_version polling', () => det.calls.count > 0, { timeoutMs: 2000 });
  det.calls.count = 0;
  f.db.prepare('INSERT INTO t VALUES (2)').run(); // the daemon's own connection counts as another connection too
  await waitFor('a wake-up after a commit on another connection of this process', () => det.calls.count > 0, {
    timeoutMs: 2000,
  });
});

test('polling_interval wakes listeners periodically with no writes at all', async () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY);');
  using det = detector(f.path, { dbPath: join(f.dir, 'no such dir', 'app.db'), pollingIntervalMs: 25 });
  det.d.open();
  await waitFor('three periodic wake-ups', () => det.calls.count >= 3, { timeoutMs: 3000 });
  det.d.close();
  const after = det.calls.count;
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(det.calls.count, after, 'close() stops the timers');
});

test('schemaChanged() is true once after a CREATE TABLE by another connection', () => {
  using f = captureFixture('CREATE TABLE t (id INTEGER PRIMARY KEY);');
  using det = detector(f.path);
  assert.equal(det.d.schemaChanged(), true, 'the first call sets the baseline');
  assert.equal(det.d.schemaChanged(), false);
  sqlite3(f.path, 'INSERT INTO t VALUES (1);');
  assert.equal(det.d.schemaChanged(), false, 'a data write is no schema change');
  sqlite3(f.path, 'CREATE TABLE n (id INTEGER PRIMARY KEY);');
  assert.equal(det.d.schemaChanged(), true);
  assert.equal(det.d.schemaChanged(), false);
  f.install(); // our own install of the new table's capture is a schema change as well
  assert.equal(det.d.schemaChanged(), true);
  f.install();
  assert.equal(det.d.schemaChanged(), false, 'an install with nothing to do changes nothing');
});
