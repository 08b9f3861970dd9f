/**
 * A JetStream store wiped (nats-server stopped, `<store>/jetstream` deleted,
 * started again) while a node was stopped and behind: the old stream held
 * changes it never applied, and they are gone with it. At its start the node
 * finds the stream recreated and recovers by the safe path: it restores a
 * snapshot made since the streams were recreated (by a node that was up to
 * date) when one reaches them, else it replays the new streams from their
 * start and says what it lost. Either way: an error line, a metric
 * (`stream_replaced_recoveries_total` by outcome) and degraded health until the
 * new streams are replayed.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../../src/config/config.ts';
import { appConnection, startNode, writeConfigFile, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { runSaveSnapshotCli } from '../snapshot/snapshot-test-kit.ts';
import { closeAll, insertItems, query } from './converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL)';

const dir = tempDir('hl-stream-restore-');
const storeDir = join(dir.path, 'snapshots');
let nats: TestNatsServer;
let nodes: TestNode[] = [];

after(async () => {
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

function configure(c: Config): void {
  c.snapshot.store = 'local';
  c.snapshot.local.path = storeDir;
  c.snapshot.interval = 0; // only the snapshot the test takes
  c.nats.reconnect_wait_seconds = 0.25;
}

function rows(path: string): number {
  return Number(query(path, 'SELECT count(*) FROM items')[0]![0]);
}

async function count(path: string, want: number): Promise<void> {
  let seen: unknown;
  await waitFor(`${want} rows in ${path}`, () => (seen = rows(path)) === want, { seen: () => seen });
}

async function recoveries(node: TestNode, outcome: string): Promise<number> {
  const m = await node.node.metrics.streamReplacedRecoveries.get();
  return m.values.filter((v) => v.labels.outcome === outcome).reduce((s, v) => s + v.value, 0);
}

async function wipeStore(): Promise<void> {
  nats.kill('SIGKILL');
  await waitFor('nats-server stopped', () => !nats.server.running);
  rmSync(join(nats.storeDir, 'jetstream'), { recursive: true, force: true });
  await nats.restart();
}

test('a node behind when the store was wiped restores a snapshot made since; without one it replays and says so', async () => {
  mkdirSync(storeDir, { recursive: true });
  nats = await startNatsServer();
  const start = async (nodeId: number, schema?: string) => {
    const n = await startNode({
      dir: dir.path,
      nodeId,
      urls: [nats.url],
      configure,
      ...(schema === undefined ? {} : { schema }),
    });
    nodes.push(n);
    return n;
  };
  const a = await start(1, SCHEMA);
  let b = await start(2, SCHEMA);
  const app = appConnection(a.dbPath);
  insertItems(app, 1, 20, (i) => `seen by both ${i}`);
  await count(b.dbPath, 20);

  // Node 2 stops; node 1 writes on: rows 21..40 are only in the old stream (and on node 1).
  await b.close();
  nodes = nodes.filter((n) => n !== b);
  insertItems(app, 21, 40, (i) => `missed by node 2 ${i}`);
  await waitFor('node 1 published everything', () => a.node.status().pending === 0);
  await a.close();
  nodes = [];
  await wipeStore();

  // Node 1 first: no snapshot made since the wipe, so it replays the new stream (it lost nothing).
  const a2 = await start(1);
  assert.equal(await recoveries(a2, 'replayed'), 1);
  assert.ok(a2.logs.has(/no snapshot made since then reaches them/), a2.logs.messages().join('\n'));
  insertItems(app, 41, 45, (i) => `after the wipe ${i}`);
  await waitFor('node 1 published the new rows', () => a2.node.status().pending === 0);
  await waitFor('node 1 healthy again', () => a2.node.status().streamProblems?.length === 0);
  // An up-to-date node's snapshot, made on the new streams.
  const saved = await runSaveSnapshotCli(writeConfigFile(a2.config, join(dir.path, 'node-1.toml')));
  assert.equal(saved.exitCode, 0, saved.output.join('\n'));

  // Node 2 starts: it was behind in the old stream, so it restores that snapshot instead of replaying.
  b = await start(2);
  assert.equal(await recoveries(b, 'restored'), 1, b.logs.messages().join('\n'));
  assert.ok(b.logs.has(/restoring a snapshot made since/));
  assert.ok(b.logs.has('Snapshot restored'));
  await count(b.dbPath, 45);
  insertItems(app, 46, 50, (i) => `later ${i}`);
  await count(b.dbPath, 50);
  await waitFor('node 2 healthy again', () => b.node.status().streamProblems?.length === 0);
  const missed = query(b.dbPath, "SELECT count(*) FROM items WHERE v LIKE 'missed by node 2%'")[0]![0];
  assert.equal(Number(missed), 20);

  // Wiped while both run: they replay the new streams (a running node does not restore) and
  // say that the next start checks for a snapshot; node 2's next start restores one made since.
  await wipeStore();
  await waitFor('node 2 replays the recreated stream', () =>
    b.logs.has(/its next start restores a snapshot made since they were recreated/),
  );
  await waitFor('node 1 replays the recreated stream', () =>
    a2.logs.has('replaying the recreated streams from their start'),
  );
  insertItems(app, 51, 55, (i) => `after the second wipe ${i}`);
  app.close();
  await count(b.dbPath, 55);
  const again = await runSaveSnapshotCli(join(dir.path, 'node-1.toml'));
  assert.equal(again.exitCode, 0, again.output.join('\n'));
  await b.close();
  nodes = nodes.filter((n) => n !== b);
  b = await start(2);
  assert.equal(await recoveries(b, 'restored'), 1, b.logs.messages().join('\n'));
  await count(b.dbPath, 55);
  // Checked once: the start after that neither restores nor replays.
  await b.close();
  nodes = nodes.filter((n) => n !== b);
  b = await start(2);
  assert.equal((await b.node.metrics.streamReplacedRecoveries.get()).values.length, 0);
  assert.equal(b.logs.has('Snapshot restored'), false);
});
