/**
 * The publisher's own state under failure (invariant 1):
 * - batches in flight when the node stopped are resumed by their contents:
 *   the persisted payload is re-published as it was and exactly the changes
 *   it carries are marked published, also after a change of the shard count;
 * - a failed write of the outbox (the database locked by an application)
 *   loses nothing: the changes stay queued and are published once it can write.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { OUTBOX, quoteIdent as q } from '../../src/cdc/names.ts';
import type { Config } from '../../src/config/config.ts';
import { createShardHasher, type ShardHasher } from '../../src/replication/shard-hasher.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { assertClean, dumpLogs, ITEMS_SCHEMA, freeze } from './fault-helpers.ts';

function configure(extra?: (c: Config) => void): (c: Config) => void {
  return (c) => {
    c.replication_log.shards = 2;
    c.replication_log.max_batch_changes = 5;
    c.nats.publish_timeout = 300;
    c.nats.reconnect_wait_seconds = 0.25;
    c.snapshot.enabled = false;
    extra?.(c);
  };
}

function rowVersion(dbPath: string, id: number): number | undefined {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare('SELECT ver FROM items WHERE id = ?').pluck().get(id) as number | undefined;
  } finally {
    db.close();
  }
}

describe('publisher recovery', () => {
  it('batches in flight at a stop are resumed by their contents, also when the shard count changed', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes: TestNode[] = [];
    let frozen = false;
    let passed = false;
    try {
      const a = await startNode({
        dir: dir.path,
        nodeId: 1,
        urls: [server.url],
        schema: ITEMS_SCHEMA,
        configure: configure(),
      });
      nodes.push(a);
      // Rows chosen so that, written in one transaction with 2 shards and batches of 5:
      // shard 2's batch takes its first 5 changes (global ids 1-5), `x` (id 6) waits in shard 2's
      // queue, shard 1's batch holds ids 7-11. With 3 shards `x` hashes to shard 1: matching resumed
      // batches by routing and global id would mark `x` published with shard 1's batch, which does
      // not carry it (a lost change).
      const h2 = await createShardHasher(2);
      const h3 = await createShardHasher(3);
      const pick = (n: number, ok: (id: number) => boolean, taken: Set<number>) => {
        const out: number[] = [];
        for (let id = 1_000_001; out.length < n; id++) if (!taken.has(id) && ok(id)) out.push(id);
        for (const id of out) taken.add(id);
        return out;
      };
      const taken = new Set<number>();
      const shard = (h: ShardHasher, id: number) => h('items', [BigInt(id)]) + 1;
      const first = pick(5, (id) => shard(h2, id) === 2, taken);
      const x = pick(1, (id) => shard(h2, id) === 2 && shard(h3, id) === 1, taken);
      const last = pick(5, (id) => shard(h2, id) === 1, taken);
      const ids = [...first, ...x, ...last];

      await freeze(server);
      frozen = true;
      {
        const db = new Database(a.dbPath);
        const insert = db.prepare("INSERT INTO items (id, origin, ver, note) VALUES (?, 1, 1, 'batch')");
        db.transaction(() => {
          for (const id of ids) insert.run(id);
        })();
        db.close();
      }
      await waitFor('both shards to have a batch in flight', () => {
        const db = new Database(a.dbPath, { readonly: true });
        try {
          return (
            db
              .prepare(`SELECT count(*) FROM ${q(OUTBOX)} WHERE payload IS NOT NULL`)
              .pluck()
              .get() === 2
          );
        } finally {
          db.close();
        }
      });
      // The server dies with the publishes unread; the node stops with its batches in flight.
      server.kill('SIGKILL');
      frozen = false;
      await a.close();
      nodes.length = 0;
      await server.restart();

      const three = configure((c) => {
        c.replication_log.shards = 3;
      });
      const a2 = await startNode({ dir: dir.path, nodeId: 1, urls: [server.url], configure: three });
      nodes.push(a2);
      assert.equal(
        a2.logs.records.filter((r) => r.msg === 'resuming the batch in flight at the last stop').length,
        2,
      );
      const b = await startNode({
        dir: dir.path,
        nodeId: 2,
        urls: [server.url],
        schema: ITEMS_SCHEMA,
        configure: three,
      });
      nodes.push(b);
      await waitFor('every row on node 2', () => ids.every((id) => rowVersion(b.dbPath, id) === 1), {
        seen: () => ids.filter((id) => rowVersion(b.dbPath, id) === undefined),
      });
      for (const n of nodes) assertClean(n.dbPath);
      passed = true;
    } finally {
      if (frozen) server.kill('SIGCONT');
      await Promise.allSettled(nodes.map((n) => n.close()));
      for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      await server.close();
    }
  });

  it('a failed outbox write (database locked by the application) loses nothing', () =>
    twoNodesWithApp(100, async (a, b, openApp) => {
      const app = openApp(a.dbPath);
      app.prepare("INSERT INTO items (id, origin, ver, note) VALUES (1000001, 1, 1, 'locked out')").run();
      // Before the daemon can react (same thread), the application takes the write lock and keeps it.
      app.exec('BEGIN IMMEDIATE');
      await waitFor(
        'the publisher to fail writing its outbox',
        () => a.logs.has('publisher step failed; retrying'),
        {
          timeoutMs: 10_000,
        },
      );
      app.exec('ROLLBACK');
      // No other write follows: the change must still be published.
      await waitFor('the change to reach node 2', () => rowVersion(b.dbPath, 1_000_001) === 1, {
        timeoutMs: 15_000,
      });
    }));

  it('a receiver whose application holds the write lock past busy_timeout retries its apply and loses nothing', () =>
    twoNodesWithApp(200, async (a, b, openApp) => {
      const app = openApp(b.dbPath);
      app.exec('BEGIN IMMEDIATE');
      const writer = new Database(a.dbPath);
      writer
        .prepare("INSERT INTO items (id, origin, ver, note) VALUES (2000001, 1, 1, 'waits for node 2')")
        .run();
      writer.close();
      const failure = await waitFor(
        'node 2 to report its apply waiting for the lock',
        () => b.logs.records.find((r) => r.msg === 'apply failed; retrying'),
        { timeoutMs: 10_000 },
      );
      assert.match(String(failure.err), /database is locked \(waited 200 ms\)/);
      assert.equal(rowVersion(b.dbPath, 2_000_001), undefined);
      app.exec('ROLLBACK');
      await waitFor(
        'the change to reach node 2 once the lock is free',
        () => rowVersion(b.dbPath, 2_000_001) === 1,
        {
          timeoutMs: 15_000,
        },
      );
    }));
});

/**
 * Two nodes on a fresh nats-server with `busy_timeout`; `body` may open
 * application connections (closed after, any transaction rolled back). Checks
 * that nothing is left pending; dumps the logs on failure.
 */
async function twoNodesWithApp(
  busyTimeoutMs: number,
  body: (a: TestNode, b: TestNode, openApp: (path: string) => Database.Database) => Promise<void>,
): Promise<void> {
  using dir = tempDir();
  const server = await startNatsServer();
  const nodes: TestNode[] = [];
  const apps: Database.Database[] = [];
  let passed = false;
  try {
    const cfg = configure((c) => {
      c.busy_timeout = busyTimeoutMs;
    });
    for (const nodeId of [1, 2])
      nodes.push(
        await startNode({ dir: dir.path, nodeId, urls: [server.url], schema: ITEMS_SCHEMA, configure: cfg }),
      );
    await body(nodes[0]!, nodes[1]!, (path) => {
      const db = new Database(path);
      apps.push(db);
      return db;
    });
    for (const n of nodes) assertClean(n.dbPath);
    passed = true;
  } finally {
    for (const app of apps) {
      if (app.inTransaction) app.exec('ROLLBACK');
      app.close();
    }
    await Promise.allSettled(nodes.map((n) => n.close()));
    for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
    await server.close();
  }
}
