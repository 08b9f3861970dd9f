/**
 * Stream identity (design.md, invariant 10) on a real nats-server whose
 * JetStream store is wiped (server stopped, `<store>/jetstream` deleted,
 * started again): the streams are recreated and their sequences start again at
 * 1, below the positions the nodes stored. A restart of the server with its
 * store intact is not a replacement. Wiped while the nodes are stopped, it is
 * found at their start; wiped while they run, on reconnect. Either way the
 * operator sees an error line and `stream_replaced_total`, the new streams are
 * replayed from their start, and writes replicate again.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Kvm } from '@nats-io/kv';
import { nodeRegistryBucket } from '../../src/nats/naming.ts';
import { appConnection, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, insertItems, query } from './converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL)';
const RECREATED = /was recreated \(the JetStream store was wiped or replaced\)/;

const dir = tempDir('hl-stream-identity-');
let nats: TestNatsServer;
let nodes: TestNode[] = [];

after(async () => {
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

async function count(path: string, want: number): Promise<void> {
  let seen: unknown;
  await waitFor(
    `${want} rows in ${path}`,
    () => (seen = Number(query(path, 'SELECT count(*) FROM items')[0]![0])) === want,
    { seen: () => seen },
  );
}

async function counter(node: TestNode, name: 'streamReplaced' | 'streamRecovering'): Promise<number> {
  return (await node.node.metrics[name].get()).values.reduce((s, v) => s + v.value, 0);
}

async function wipeStore(): Promise<void> {
  nats.kill('SIGKILL');
  await waitFor('nats-server stopped', () => !nats.server.running);
  rmSync(join(nats.storeDir, 'jetstream'), { recursive: true, force: true });
  await nats.restart();
}

test('a wiped JetStream store is reported and the new streams replayed, found at start or on reconnect', async () => {
  nats = await startNatsServer();
  for (const nodeId of [1, 2])
    nodes.push(await startNode({ dir: dir.path, nodeId, urls: [nats.url], schema: SCHEMA }));
  const [writer, receiver] = nodes as [TestNode, TestNode];
  const app = appConnection(writer.dbPath);
  // One message per round: the receiver's position passes what the new stream will hold.
  for (let round = 0; round < 8; round++) {
    insertItems(app, round * 5 + 1, round * 5 + 5, (i) => `before ${i}`);
    await count(receiver.dbPath, round * 5 + 5);
  }
  // The rows are visible just before the worker's result moves the consumer's position on.
  await waitFor('the receiver at position 8', () => receiver.node.consumers[0]!.position >= 8);
  const oldPosition = receiver.node.consumers[0]!.position;

  // A server restart with its store intact keeps the streams: no replacement.
  await nats.restart();
  insertItems(app, 41, 45, (i) => `after restart ${i}`);
  await count(receiver.dbPath, 45);
  assert.equal(receiver.logs.has(RECREATED), false);
  assert.equal(await counter(receiver, 'streamReplaced'), 0);

  // Wiped while the nodes are stopped: found at their start, the new streams replayed from 1.
  await closeAll(nodes);
  nodes = [];
  await wipeStore();
  insertItems(app, 46, 48, (i) => `after wipe ${i}`); // written while the nodes were stopped
  for (const nodeId of [1, 2]) nodes.push(await startNode({ dir: dir.path, nodeId, urls: [nats.url] }));
  let receiver2 = nodes[1]!;
  assert.ok(receiver2.logs.has(RECREATED), receiver2.logs.messages().join('\n'));
  const line = receiver2.logs.records.find((r) => RECREATED.test(String(r.msg)))!;
  assert.ok(Number(line.old_position) > oldPosition, `old position ${String(line.old_position)}`);
  assert.equal(await counter(receiver2, 'streamReplaced'), 1);
  await count(receiver2.dbPath, 48);
  for (let round = 0; round < 4; round++) {
    insertItems(app, 49 + round * 2, 50 + round * 2, (i) => `later ${i}`);
    await count(receiver2.dbPath, 50 + round * 2);
  }
  await waitFor('recovery done', async () => (await counter(receiver2, 'streamRecovering')) === 0);
  await waitFor('no stream problems', () => receiver2.node.status().streamProblems?.length === 0);
  const position = receiver2.node.consumers[0]!.position;
  assert.ok(position >= 4, `position ${position}`);

  // Wiped while the nodes run: found on reconnect, the streams made again, the consumers restarted.
  await wipeStore();
  // Missing, or already recreated by the other node when this one looks.
  await waitFor('the running node reports the lost stream', () =>
    receiver2.logs.has(
      /no longer exists \(the JetStream store was wiped, or the stream deleted\)|was recreated while this node ran/,
    ),
  );
  await waitFor('the running node replays the new stream', () =>
    receiver2.logs.has('replaying the recreated streams from their start'),
  );
  assert.equal(await counter(receiver2, 'streamReplaced'), 2);
  insertItems(app, 57, 58, (i) => `after the second wipe ${i}`);
  app.close();
  await count(receiver2.dbPath, 58);
  receiver2 = nodes[1]!;
  assert.ok(receiver2.node.consumers[0]!.position < position, 'positions of the new stream');
  await waitFor('no stream problems', () => receiver2.node.status().streamProblems?.length === 0);
  // The node id registration went with the store: the running node registers again.
  await waitFor('node 2 registered again', async () => {
    const kv = await new Kvm(receiver2.node.natsConnection!).open(nodeRegistryBucket('harmonylite-changes'));
    return (await kv.get('node.2'))?.operation === 'PUT';
  });
});
