/**
 * Invariant 8 end to end: nodes on one real nats-server with small streams
 * (50 messages per shard, one change per message) that roll over while the
 * snapshot leader keeps snapshots in a local-directory store.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { after, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { createLogger } from '../../src/logger.ts';
import { HarmonyLiteNode } from '../../src/node/harmonylite-node.ts';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import {
  createDatabase,
  LogCapture,
  nodeConfig,
  startNode,
  tableContents,
  waitConverged,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  count,
  counterTotal,
  SCHEMA,
  smallStreams,
  streamRanges,
  waitForRolloverAndSnapshot,
  writeRows,
} from './snapshot-test-kit.ts';

const root = tempDir('hl-restore-');
after(() => root.remove());
let n = 0;

describe('snapshot restore', () => {
  it('a new node restores the newest snapshot, skips the discarded history and converges', async () => {
    const dir = join(root.path, `new-node-${++n}`);
    const storeDir = join(dir, 'snapshots');
    mkdirSync(dir);
    await using server = await startNatsServer();
    const configure = smallStreams(storeDir);
    const a = await startNode({ dir, nodeId: 1, urls: [server.url], schema: SCHEMA, configure });
    const b = await startNode({ dir, nodeId: 2, urls: [server.url], schema: SCHEMA, configure });
    try {
      writeRows(a.dbPath, 1, 150, 'a');
      writeRows(b.dbPath, 1001, 1150, 'b');
      await waitConverged([a.dbPath, b.dbPath], ['items']);
      const snapshot = await waitForRolloverAndSnapshot(server.url, a.config, storeDir);
      assert.ok(a.logs.has('Snapshot saved') || b.logs.has('Snapshot saved'));
      assert.ok(
        [a, b].filter((x) => x.logs.has('became snapshot leader')).length === 1,
        'exactly one node became leader',
      );

      const c = await startNode({ dir, nodeId: 3, urls: [server.url], schema: SCHEMA, configure });
      try {
        assert.ok(c.logs.has('Snapshot restored'), c.logs.messages().join('\n'));
        const restored = c.logs.records.find((r) => r.msg === 'Snapshot restored')!;
        const positions = restored.positions as Record<string, number>;
        assert.ok(positions['1']! >= snapshot.positions['1']! && positions['2']! >= snapshot.positions['2']!);
        await waitConverged([a.dbPath, b.dbPath, c.dbPath], ['items']);
        // No replay of the discarded history: c applied only what came after the snapshot.
        const ranges = await streamRanges(server.url, c.config);
        const replayable = ranges.reduce((sum, r) => sum + r.lastSeq - (positions[String(r.shard)] ?? 0), 0);
        const applied = await counterTotal(c.node.metrics.applied);
        const skipped = await counterTotal(c.node.metrics.duplicatesSkipped);
        assert.ok(applied + skipped <= replayable, `applied ${applied} + skipped ${skipped} > ${replayable}`);
        assert.ok(!c.logs.has(/no longer holds the messages/), 'never behind after the restore');
        // The restored node captures and publishes its own writes.
        writeRows(c.dbPath, 5001, 5010, 'c');
        await waitConverged([a.dbPath, b.dbPath, c.dbPath], ['items']);
      } finally {
        await c.close();
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('a node down while the streams roll over restores on restart and keeps its unpublished writes', async () => {
    const dir = join(root.path, `down-node-${++n}`);
    const storeDir = join(dir, 'snapshots');
    mkdirSync(dir);
    await using server = await startNatsServer();
    const configure = smallStreams(storeDir);
    const a = await startNode({ dir, nodeId: 1, urls: [server.url], schema: SCHEMA, configure });
    let c = await startNode({ dir, nodeId: 3, urls: [server.url], schema: SCHEMA, configure });
    try {
      writeRows(a.dbPath, 1, 20, 'a');
      writeRows(c.dbPath, 101, 110, 'c');
      await waitConverged([a.dbPath, c.dbPath], ['items']);
      await c.close();
      // The application keeps writing to c's database while its node is down: captured, not published.
      writeRows(c.dbPath, 201, 230, 'c-offline');
      writeRows(c.dbPath, 5, 5, 'c-offline-update');
      writeRows(a.dbPath, 1000, 1200, 'a-rollover');
      await waitForRolloverAndSnapshot(server.url, a.config, storeDir);

      c = await startNode({ dir, nodeId: 3, urls: [server.url], configure });
      assert.ok(c.logs.has('Snapshot restored'), c.logs.messages().join('\n'));
      assert.ok(c.logs.has('publishing local changes before the restore') || c.logs.has('Snapshot restored'));
      await waitConverged([a.dbPath, c.dbPath], ['items']);
      const contents = tableContents(a.dbPath, 'items');
      for (const id of [201, 215, 230]) assert.match(contents, new RegExp(`'c-offline-${id}'`));
      // Row 5 was written on a (before) and updated on c while c was down, later in stream order: c's value wins.
      assert.match(contents, /'c-offline-update-5'/);
    } finally {
      await c.close();
      await a.close();
    }
  });

  it('application writes during the restore are never lost', async () => {
    const dir = join(root.path, `busy-${++n}`);
    const storeDir = join(dir, 'snapshots');
    mkdirSync(dir);
    await using server = await startNatsServer();
    const configure = smallStreams(storeDir);
    const a = await startNode({ dir, nodeId: 1, urls: [server.url], schema: SCHEMA, configure });
    let c = await startNode({ dir, nodeId: 3, urls: [server.url], schema: SCHEMA, configure });
    try {
      writeRows(a.dbPath, 1, 10, 'a');
      await waitConverged([a.dbPath, c.dbPath], ['items']);
      await c.close();
      writeRows(a.dbPath, 1000, 1200, 'a-rollover');
      await waitForRolloverAndSnapshot(server.url, a.config, storeDir);
      // An application process keeps writing to c's database while c starts and restores.
      const app = startAppWriter(c.dbPath, 20_000);
      try {
        await waitFor('the application to be writing', () => app.written() > 5);
        // c batches normally, so its publisher keeps up with the application.
        const batching = smallStreams(storeDir, (x) => (x.replication_log.max_batch_changes = 1000));
        c = await startNode({ dir, nodeId: 3, urls: [server.url], configure: batching });
        assert.ok(c.logs.has('Snapshot restored'), c.logs.messages().join('\n'));
        await new Promise((r) => setTimeout(r, 500)); // a few writes after the restore too
      } finally {
        await app.stop();
      }
      assert.equal(app.error(), undefined);
      const last = app.written();
      await waitFor(
        `all ${last} application rows on the other node`,
        () => count(a.dbPath, 'SELECT count(*) FROM items WHERE id >= 20000') === last,
        { timeoutMs: 30_000, seen: () => count(a.dbPath, 'SELECT count(*) FROM items WHERE id >= 20000') },
      );
      await waitConverged([a.dbPath, c.dbPath], ['items']);
    } finally {
      await c.close();
      await a.close();
    }
  });

  it('a corrupted snapshot object is rejected and the node database stays untouched', async () => {
    const dir = join(root.path, `corrupt-${++n}`);
    const storeDir = join(dir, 'snapshots');
    mkdirSync(dir);
    await using server = await startNatsServer();
    const configure = smallStreams(storeDir, (c) => {
      c.snapshot.keep = 1;
      c.snapshot.compress = false;
    });
    const a = await startNode({ dir, nodeId: 1, urls: [server.url], schema: SCHEMA, configure });
    try {
      writeRows(a.dbPath, 1, 200, 'a');
      const snapshot = await waitForRolloverAndSnapshot(server.url, a.config, storeDir);
      await a.close(); // no newer snapshot replaces the damaged one
      // Flip bytes in the middle of the stored data object (same size: only the checksum can tell).
      const dataPath = join(storeDir, snapshot.dataObject);
      const bytes = readFileSync(dataPath);
      for (let i = 0; i < 16; i++) bytes[Math.floor(bytes.length / 2) + i]! ^= 0xff;
      writeFileSync(dataPath, bytes);

      const config = nodeConfig({ dir, nodeId: 3, urls: [server.url], configure });
      createDatabase(config.db_path, `${SCHEMA} INSERT INTO items VALUES (77, 'local', NULL);`);
      const before = tableContents(config.db_path, 'items');
      const logs = new LogCapture();
      const node = new HarmonyLiteNode({
        config,
        logger: createLogger({ verbose: false, format: 'json', nodeId: 3, destination: logs }),
      });
      try {
        await assert.rejects(node.open(), (err) => {
          assert.ok(err instanceof SnapshotError, String(err));
          assert.equal(err.code, 'ERR_SNAPSHOT_CORRUPT');
          assert.match(err.message, /no snapshot could be restored; the database is unchanged/);
          assert.match(err.message, /checksum xxh64:[0-9a-f]{16}, the manifest says/);
          return true;
        });
      } finally {
        await node.close();
      }
      assert.equal(
        logs.records.filter((r) => r.msg === 'snapshot download rejected').length,
        3,
        'tried 3 times',
      );
      assert.equal(tableContents(config.db_path, 'items'), before);
      assert.deepEqual(
        readdirSync(dir).filter((f) => f.startsWith('.harmonylite-snapshot-')),
        [],
        'temporary files removed',
      );
    } finally {
      await a.close();
    }
  });
});

/**
 * An application in its own thread (as in its own process: its busy waits must
 * not stall the node's event loop) writing one row per transaction, ids from
 * `firstId` up, with a 10 s busy timeout, until stopped.
 */
function startAppWriter(
  dbPath: string,
  firstId: number,
): { written(): number; error(): string | undefined; stop(): Promise<void> } {
  const shared = new Int32Array(new SharedArrayBuffer(8)); // [rows written, stop flag]
  let failure: string | undefined;
  const worker = new Worker(
    `const { workerData } = require('node:worker_threads');
     const Database = require(workerData.driver);
     const db = new Database(workerData.dbPath, { timeout: 10000 });
     const insert = db.prepare("INSERT INTO items (id, name, blob) VALUES (?, 'app', NULL)");
     const pause = new Int32Array(new SharedArrayBuffer(4));
     while (Atomics.load(workerData.shared, 1) === 0) {
       insert.run(workerData.firstId + Atomics.load(workerData.shared, 0));
       Atomics.add(workerData.shared, 0, 1);
       Atomics.wait(pause, 0, 0, 10);
     }
     db.close();`,
    {
      eval: true,
      workerData: {
        dbPath,
        firstId,
        shared,
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
      },
    },
  );
  worker.on('error', (err) => (failure = String(err)));
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return {
    written: () => Atomics.load(shared, 0),
    error: () => failure,
    stop: async () => {
      Atomics.store(shared, 1, 1);
      await exited;
    },
  };
}
