/**
 * An origin's batch seqs never go backwards (design.md, invariant 10): a node
 * publishes with its clock an hour ahead, is stopped, `-cleanup` drops its
 * tables (its own record of the seqs), and it starts again with the right
 * clock. Its new changes still replicate: receivers would drop batches with
 * lower seqs as duplicates of the ones they applied.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { runCleanup } from '../../src/cli/run-cleanup.ts';
import { silentLogger } from '../../src/logger.ts';
import { appConnection, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, counterValue, insertItems, query } from './converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL)';
const HOUR_MS = 3_600_000;

const dir = tempDir('hl-batch-seq-');
let nats: TestNatsServer | undefined;
const nodes: TestNode[] = [];

after(async () => {
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

async function count(path: string, want: number): Promise<void> {
  let seen: unknown;
  await waitFor(
    `${want} rows in ${path}`,
    () => (seen = Number(query(path, 'SELECT count(*) FROM items')[0]![0])) === want,
    {
      seen: () => seen,
    },
  );
}

test('a node whose clock went back after -cleanup still replicates its new writes', async () => {
  nats = await startNatsServer();
  const ahead = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [nats.url],
    schema: SCHEMA,
    clock: () => Date.now() + HOUR_MS,
  });
  nodes.push(ahead);
  const receiver = await startNode({ dir: dir.path, nodeId: 2, urls: [nats.url], schema: SCHEMA });
  nodes.push(receiver);

  const app = appConnection(ahead.dbPath);
  insertItems(app, 1, 50, (i) => `ahead ${i}`);
  await count(receiver.dbPath, 50);

  await ahead.close();
  nodes.splice(nodes.indexOf(ahead), 1);
  assert.equal(runCleanup(ahead.config, silentLogger()), 0);

  const corrected = await startNode({ dir: dir.path, nodeId: 1, urls: [nats.url] });
  nodes.push(corrected);
  insertItems(app, 51, 100, (i) => `corrected ${i}`);
  app.close();
  await count(receiver.dbPath, 100);
  assert.equal(await counterValue(receiver, 'duplicatesSkipped'), 0);
});
