/**
 * An idle node leaves SQLite's write lock alone: a client with a busy timeout
 * of 0 (the sqlite3 shell, PHP) must not meet the daemon's periodic work.
 * Here the application holds the write lock for longer than the node's busy
 * timeout, across several cleanup passes: any write the idle node tried would
 * fail busy (counted in sqlite_busy_total, logged as a failed cleanup).
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { startNatsServer } from '../helpers/nats-server.ts';
import { startNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';

test('an idle node takes no write lock across its cleanup passes', async () => {
  using dir = tempDir();
  const server = await startNatsServer();
  const n = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [server.url],
    schema: 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)',
    configure: (c) => {
      c.cleanup_interval = 100;
      c.busy_timeout = 200;
      c.snapshot.enabled = false;
    },
  });
  const app = new Database(n.dbPath, { timeout: 5000 });
  try {
    app.prepare('INSERT INTO notes (body) VALUES (?)').run('published before the node is idle');
    await waitFor('the write to be published', () => n.node.status().pending === 0);
    await sleep(500); // the publish's own bookkeeping is done
    const busyBefore = (await n.node.metrics.sqliteBusy.get()).values[0]?.value ?? 0;
    app.exec('BEGIN IMMEDIATE');
    await sleep(1500); // 15 cleanup passes, each longer than the busy timeout would wait
    app.exec('ROLLBACK');
    await sleep(300);
    const busyAfter = (await n.node.metrics.sqliteBusy.get()).values[0]?.value ?? 0;
    assert.equal(
      busyAfter - busyBefore,
      0,
      'the idle node tried to write while the application held the lock',
    );
    assert.equal(n.logs.has('cleanup of change logs failed; will retry'), false);
  } finally {
    app.close();
    await n.close();
    await server.close();
  }
});
