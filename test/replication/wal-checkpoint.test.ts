/**
 * The node folds a grown WAL back into the database off its main thread:
 * PASSIVE past `wal_checkpoint_bytes`, TRUNCATE (the -wal file emptied) past
 * four times that, while replication goes on.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { appConnection, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, counterValue, insertItems, query, startTwoNodes } from './converge-helpers.ts';

/**
 * Rows `from`..`to` (200 bytes each) in one transaction of an application that never
 * checkpoints: only the daemon can fold the WAL back (and only TRUNCATE empties the file).
 */
function writeRows(dbPath: string, from: number, to: number): void {
  const app = appConnection(dbPath);
  try {
    app.pragma('wal_autocheckpoint = 0');
    insertItems(app, from, to, () => 'x'.repeat(200));
  } finally {
    app.close();
  }
}

/**
 * Nodes 1 and 2 with one table and the given `wal_checkpoint_bytes`; rows 1-2000
 * written on node 1 (`writeRows`) and arrived on node 2 before `body`; all stopped after.
 */
async function withPairHolding2000Rows(
  walCheckpointBytes: number,
  body: (a: TestNode, b: TestNode) => Promise<void>,
): Promise<void> {
  using dir = tempDir();
  const nats = await startNatsServer();
  const nodes: TestNode[] = [];
  try {
    const [a, b] = await startTwoNodes(nodes, {
      dir: dir.path,
      urls: [nats.url],
      schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);',
      configure: (c) => {
        c.wal_checkpoint_bytes = walCheckpointBytes;
      },
    });
    writeRows(a.dbPath, 1, 2000);
    await waitFor(
      'node 2 holds the 2000 rows',
      () => query(b.dbPath, 'SELECT count(*) FROM items')[0]![0] === 2000n,
    );
    await body(a, b);
  } finally {
    await closeAll(nodes, () => nats.close());
  }
}

test('a WAL past four times wal_checkpoint_bytes is truncated, and replication goes on', () =>
  withPairHolding2000Rows(64 * 1024, async (a, b) => {
    const walBytes = () => statSync(`${a.dbPath}-wal`, { throwIfNoEntry: false })?.size ?? 0;
    await waitFor('the WAL of node 1 is truncated', () => walBytes() === 0, {
      timeoutMs: 15_000,
      seen: walBytes,
    });
    const more = appConnection(a.dbPath);
    more.prepare("INSERT INTO items (id, v) VALUES (5000, 'after')").run();
    more.close();
    await waitFor(
      'a later write reaches node 2',
      () => query(b.dbPath, 'SELECT count(*) FROM items WHERE id = 5000')[0]![0] === 1n,
    );
    // Grown again past four times the threshold, though less than the first time: truncated again
    // (counted: the node's own writes right after may leave a few KB in the file).
    const truncations = async () =>
      (await a.node.metrics.walCheckpoints.get()).values.find((v) => v.labels.mode === 'TRUNCATE')?.value ??
      0;
    const before = await truncations();
    writeRows(a.dbPath, 10_001, 11_000);
    await waitFor('the WAL of node 1 is truncated again', async () => (await truncations()) > before, {
      timeoutMs: 15_000,
      seen: walBytes,
    });
    assert.equal(query(a.dbPath, 'PRAGMA integrity_check')[0]![0], 'ok');
  }));

test('a WAL checkpointed in full is not checkpointed again until it grows: no checkpoint thread every second', () =>
  withPairHolding2000Rows(256 * 1024, async (a, b) => {
    // Node 2 only replays; its WAL passes the threshold (SQLite's own checkpoint waits for ~4 MB).
    await waitFor('node 2 checkpointed its WAL', async () => (await counterValue(b, 'walCheckpoints')) >= 1, {
      timeoutMs: 10_000,
    });
    const walBytes = statSync(`${b.dbPath}-wal`).size;
    assert.ok(
      walBytes >= 256 * 1024 && walBytes < 4 * 256 * 1024,
      `node 2 WAL ${walBytes} bytes: PASSIVE range`,
    );
    const settled = await counterValue(b, 'walCheckpoints');
    await new Promise((r) => setTimeout(r, 3500)); // three housekeeping ticks with the file still that size
    assert.equal(await counterValue(b, 'walCheckpoints'), settled, 'no checkpoint while nothing was written');
    // New writes that grow the file past its size are checkpointed again.
    writeRows(a.dbPath, 2001, 6000);
    await waitFor(
      'node 2 holds the 6000 rows',
      () => query(b.dbPath, 'SELECT count(*) FROM items')[0]![0] === 6000n,
    );
    await waitFor(
      'node 2 checkpointed again',
      async () => (await counterValue(b, 'walCheckpoints')) > settled,
      {
        timeoutMs: 10_000,
      },
    );
  }));
