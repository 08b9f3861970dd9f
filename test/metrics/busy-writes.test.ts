/**
 * sqlite_busy_total counts write jobs that fail with "database is locked",
 * on a real SQLite file locked by another connection; other failures are not
 * counted, results and the lane argument pass through, and the hook can be removed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { countBusyWrites } from '../../src/metrics/busy-writes.ts';
import { isSqliteBusy } from '../../src/sqlite/sqlite-busy.ts';
import { Metrics } from '../../src/metrics/metrics.ts';
import { WriterQueue } from '../../src/sqlite/writer-queue.ts';
import { tempDir } from '../helpers/temp-dir.ts';

async function busyCount(metrics: Metrics): Promise<number> {
  return (await metrics.sqliteBusy.get()).values[0]?.value ?? 0;
}

test('counts write jobs that fail with SQLITE_BUSY, and only those', async () => {
  using dir = tempDir('hl-busy-');
  const path = join(dir.path, 'app.db');
  const holder = new Database(path);
  const writerDb = new Database(path, { timeout: 20 });
  try {
    holder.pragma('journal_mode = WAL');
    holder.exec('CREATE TABLE t (x)');
    const metrics = new Metrics({ namespace: 'harmonylite', subsystem: '', processMetrics: false });
    const writer = new WriterQueue();
    writer.onError = countBusyWrites(metrics);

    assert.equal(await writer.run(() => 42), 42);
    holder.exec('BEGIN IMMEDIATE');
    const err = await writer.run(() => writerDb.exec('INSERT INTO t VALUES (1)')).catch((e: unknown) => e);
    holder.exec('ROLLBACK');
    assert.ok(isSqliteBusy(err), String(err));
    assert.equal(await busyCount(metrics), 1);

    await assert.rejects(
      writer.run(() => writerDb.exec('INSERT INTO missing VALUES (1)')),
      /no such table/,
    );
    assert.equal(await busyCount(metrics), 1);

    // The lane passes through: an urgent job queued behind normal ones runs first.
    const order: string[] = [];
    const jobs = [
      writer.run(() => new Promise<void>((r) => setTimeout(r, 10)).then(() => order.push('running'))),
      writer.run(() => order.push('normal')),
      writer.run(() => order.push('urgent'), 'urgent'),
    ];
    await Promise.all(jobs);
    assert.deepEqual(order, ['running', 'urgent', 'normal']);

    writer.onError = undefined;
    holder.exec('BEGIN IMMEDIATE');
    await assert.rejects(writer.run(() => writerDb.exec('INSERT INTO t VALUES (1)')));
    holder.exec('ROLLBACK');
    assert.equal(await busyCount(metrics), 1, 'not counted once the hook is removed');
  } finally {
    writerDb.close();
    holder.close();
  }
});

test('recognizes busy errors that crossed a worker boundary as plain messages', () => {
  assert.ok(isSqliteBusy(Object.assign(new Error('x'), { code: 'SQLITE_BUSY_SNAPSHOT' })));
  assert.ok(isSqliteBusy(new Error('database is locked')));
  assert.ok(!isSqliteBusy(new Error('database table is locked')));
  assert.ok(!isSqliteBusy(Object.assign(new Error('constraint'), { code: 'SQLITE_CONSTRAINT' })));
  assert.ok(!isSqliteBusy(undefined));
});
