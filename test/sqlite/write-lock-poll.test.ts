/**
 * The publisher's outbox writes wait for SQLite's write lock without blocking
 * the event loop, catch the lock as soon as the application lets go, and give
 * up with SQLITE_BUSY after the busy timeout. Real SQLite file, two connections.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { whenWriteLockFree } from '../../src/sqlite/write-lock-poll.ts';
import { tempDir } from '../helpers/temp-dir.ts';

const dir = tempDir('hl-write-lock-');
after(() => dir.remove());
const stackTraceLimit = Error.stackTraceLimit;

function connections(name: string) {
  const path = join(dir.path, name);
  const daemon = new Database(path, { timeout: 2000 });
  daemon.pragma('journal_mode = WAL');
  daemon.exec('CREATE TABLE t (v INTEGER)');
  const app = new Database(path);
  return { daemon, app };
}

test('waits for the application to commit while timers keep running, then writes at once', async () => {
  const { daemon, app } = connections('wait.db');
  try {
    app.prepare('BEGIN IMMEDIATE').run();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    let committedAt = 0;
    setTimeout(() => {
      app.prepare('INSERT INTO t VALUES (1)').run();
      app.prepare('COMMIT').run();
      committedAt = performance.now();
    }, 120);
    await whenWriteLockFree(daemon, 1500, () =>
      daemon.transaction(() => daemon.prepare('INSERT INTO t VALUES (2)').run()).immediate(),
    );
    const doneAt = performance.now();
    clearInterval(timer);
    assert.ok(committedAt > 0, 'the job ran only after the application committed');
    assert.ok(ticks >= 5, `the event loop kept running while waiting (${ticks} ticks)`);
    assert.ok(doneAt - committedAt < 100, `written ${Math.round(doneAt - committedAt)} ms after the commit`);
    assert.deepEqual(daemon.prepare('SELECT v FROM t ORDER BY v').pluck().all(), [1, 2]);
    assert.equal(daemon.pragma('busy_timeout', { simple: true }), 2000, 'busy timeout restored');
    // Retries run without stack capture (cheaper failed attempts); the setting comes back.
    assert.equal(Error.stackTraceLimit, stackTraceLimit, 'stack trace limit restored');
  } finally {
    app.close();
    daemon.close();
  }
});

test('gives up with SQLITE_BUSY after the timeout, having written nothing', async () => {
  const { daemon, app } = connections('busy.db');
  try {
    app.prepare('BEGIN IMMEDIATE').run();
    const t0 = performance.now();
    await assert.rejects(
      whenWriteLockFree(daemon, 150, () => daemon.prepare('INSERT INTO t VALUES (3)').run()),
      (err: Error & { code?: string }) => err.code === 'SQLITE_BUSY',
    );
    assert.ok(performance.now() - t0 >= 150);
    app.prepare('ROLLBACK').run();
    assert.equal(daemon.prepare('SELECT count(*) FROM t').pluck().get(), 0);
    assert.equal(daemon.pragma('busy_timeout', { simple: true }), 2000, 'busy timeout restored');
    assert.equal(Error.stackTraceLimit, stackTraceLimit, 'stack trace limit restored');
  } finally {
    app.close();
    daemon.close();
  }
});

test('errors other than SQLITE_BUSY are not retried', async () => {
  const { daemon, app } = connections('other.db');
  let attempts = 0;
  try {
    await assert.rejects(
      whenWriteLockFree(daemon, 1000, () => {
        attempts++;
        return daemon.prepare('INSERT INTO missing VALUES (1)').run();
      }),
      /no such table: missing/,
    );
    assert.equal(attempts, 1);
  } finally {
    app.close();
    daemon.close();
  }
});

test('an error of another kind on a retry is thrown with its stack', async () => {
  const { daemon, app } = connections('retry-error.db');
  let attempts = 0;
  try {
    app.prepare('BEGIN IMMEDIATE').run();
    setTimeout(() => app.prepare('ROLLBACK').run(), 30);
    await assert.rejects(
      whenWriteLockFree(daemon, 1000, () => {
        // Busy until the application rolls back; then the retry fails for another reason.
        if (++attempts === 1) return daemon.prepare('INSERT INTO t VALUES (1)').run();
        return daemon.transaction(() => daemon.prepare('INSERT INTO missing VALUES (1)').run()).immediate();
      }),
      (err: Error) => /no such table: missing/.test(err.message) && /\n\s+at /.test(err.stack ?? ''),
    );
    assert.ok(attempts >= 2, `${attempts} attempts`);
    assert.equal(Error.stackTraceLimit, stackTraceLimit, 'stack trace limit restored');
  } finally {
    app.close();
    daemon.close();
  }
});
