import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { swapDatabase } from '../../src/snapshot/database-swap.ts';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';
import { tempDir } from '../helpers/temp-dir.ts';

const root = tempDir('hl-swap-');
after(() => root.remove());
let n = 0;

function files(): { live: string; source: string } {
  const dir = join(root.path, `case-${++n}`);
  mkdirSync(dir);
  const live = join(dir, 'live.db');
  const db = new Database(live);
  db.pragma('journal_mode = WAL');
  db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'old')");
  db.close();
  const source = join(dir, 'source.db');
  const src = new Database(source);
  src.exec(
    "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE u (x); INSERT INTO t VALUES (1, 'new'), (2, 'new')",
  );
  src.exec(
    'WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 2000) INSERT INTO u SELECT randomblob(4000) FROM c',
  );
  src.close();
  return { live, source };
}

describe('swapDatabase', () => {
  it('replaces the content atomically; a connection opened before sees the new rows, WAL mode stays', async () => {
    const { live, source } = files();
    const app = new Database(live);
    assert.deepEqual(app.prepare('SELECT v FROM t').pluck().all(), ['old']);
    const seenDuring: string[][] = [];
    const progress: number[] = [];
    await swapDatabase({
      sourcePath: source,
      livePath: live,
      busyTimeoutMs: 1000,
      pagesPerStep: 200,
      checkLocked: () => undefined,
      onProgress: (bytes) => {
        progress.push(bytes);
        seenDuring.push(app.prepare('SELECT v FROM t ORDER BY id').pluck().all() as string[]);
      },
    });
    assert.ok(progress.length > 3, 'several steps');
    // The last progress call reports completion, after the commit.
    for (const seen of seenDuring.slice(0, -1))
      assert.deepEqual(seen, ['old'], 'readers see the old content until the commit');
    assert.deepEqual(seenDuring.at(-1), ['new', 'new']);
    assert.deepEqual(app.prepare('SELECT v FROM t ORDER BY id').pluck().all(), ['new', 'new']);
    assert.equal(app.prepare('SELECT count(*) FROM u').pluck().get(), 2000);
    assert.equal(app.pragma('journal_mode', { simple: true }), 'wal');
    assert.deepEqual(app.pragma('integrity_check', { simple: true }), 'ok');
    app.close();
  });

  it('a failed check under the lock leaves the live database untouched', async () => {
    const { live, source } = files();
    await assert.rejects(
      swapDatabase({
        sourcePath: source,
        livePath: live,
        busyTimeoutMs: 1000,
        checkLocked: () => {
          throw new Error('live state moved');
        },
      }),
      /live state moved/,
    );
    const db = new Database(live, { readonly: true });
    assert.deepEqual(db.prepare('SELECT v FROM t').pluck().all(), ['old']);
    db.close();
  });

  it('waits for a writer to finish, and gives up with a clear error after busy_timeout', async () => {
    const { live, source } = files();
    const app = new Database(live);
    app.exec('BEGIN IMMEDIATE');
    const release = setTimeout(() => app.exec('COMMIT'), 300);
    let checkedAt = 0;
    const started = performance.now();
    await swapDatabase({
      sourcePath: source,
      livePath: live,
      busyTimeoutMs: 5000,
      checkLocked: () => {
        checkedAt = performance.now() - started;
      },
    });
    clearTimeout(release);
    assert.ok(checkedAt >= 250, `the lock was taken after the writer committed (${checkedAt} ms)`);
    assert.deepEqual(app.prepare('SELECT v FROM t ORDER BY id').pluck().all(), ['new', 'new']);

    app.exec('BEGIN IMMEDIATE');
    await assert.rejects(
      swapDatabase({ sourcePath: source, livePath: live, busyTimeoutMs: 200, checkLocked: () => undefined }),
      (err) => {
        assert.ok(err instanceof SnapshotError);
        assert.equal(err.code, 'ERR_SNAPSHOT_RESTORE');
        assert.match(err.message, /another connection kept it locked for 200 ms/);
        return true;
      },
    );
    app.exec('ROLLBACK');
    app.close();
  });
});
