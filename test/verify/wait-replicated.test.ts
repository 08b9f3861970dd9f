/**
 * Waiting for a write: `GET /replicated` on the node's health listener and
 * `-wait-replicated` answer once the write is applied on the nodes asked for
 * (the row is there when they answer), 504 / exit 1 when a node that must
 * hold it is down, 400 for bad parameters.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import type Database from 'better-sqlite3';
import { runWaitReplicated } from '../../src/cli/run-wait-replicated.ts';
import { createLogger } from '../../src/logger.ts';
import { appConnection, LogCapture, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { closeAll, query } from '../replication/converge-helpers.ts';

const dir = tempDir('hl-wait-');
let nats: TestNatsServer;
const nodes: TestNode[] = [];
let app: Database.Database;
let base: string;

before(async () => {
  nats = await startNatsServer();
  for (const nodeId of [1, 2, 3])
    nodes.push(
      await startNode({
        dir: dir.path,
        nodeId,
        urls: [nats.url],
        schema: 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);',
        configure: (c) => {
          c.replication_log.shards = 2;
          c.health_check.enable = true;
          c.health_check.bind = '127.0.0.1:0';
        },
      }),
    );
  app = appConnection(nodes[0]!.dbPath);
  const a = nodes[0]!.node.observability!.healthServer!.address!;
  base = `http://127.0.0.1:${a.port}`;
});

after(async () => {
  app?.close();
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

/** What an application runs after its write: the id of the last change captured on this node. */
function lastChangeId(): number {
  return Number(
    app
      .prepare("SELECT seq FROM sqlite_sequence WHERE name = '__harmonylite___global_change_log'")
      .pluck()
      .get(),
  );
}

async function get(path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const r = await fetch(`${base}${path}`);
  return { status: r.status, body: (await r.json()) as Record<string, unknown> };
}

test('GET /replicated answers once the write is on every node', async () => {
  for (let i = 1; i <= 20; i++) {
    app.prepare('INSERT INTO notes VALUES (?, ?)').run(i, `note ${i}`);
    const id = lastChangeId();
    const r = await get(`/replicated?after=${id}&nodes=all&timeout=5s`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.reached, true);
    assert.equal(r.body.needed, 3);
    // Reached means readable: the row is on the other nodes when the answer comes.
    for (const n of nodes.slice(1))
      assert.deepEqual(query(n.dbPath, 'SELECT body FROM notes WHERE id = ?', i), [[`note ${i}`]]);
  }
});

test('bad parameters are a 400', async () => {
  for (const q of ['', '?after=x', '?after=1&nodes=most', '?after=1&timeout=soon'])
    assert.equal((await get(`/replicated${q}`)).status, 400, q);
});

test('-wait-replicated: exit 0 when reached, with the positions', async () => {
  app.prepare('INSERT INTO notes VALUES (100, ?)').run('cli');
  let text = '';
  const out = new Writable({
    write(chunk: Buffer, _e, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  const logger = createLogger({ verbose: false, format: 'json', destination: new LogCapture() });
  const code = await runWaitReplicated(
    nodes[0]!.config,
    logger,
    { after: 'last', nodes: 'all', timeout: '5s' },
    out,
  );
  assert.equal(code, 0, text);
  const r = JSON.parse(text) as { reached: boolean; nodes: { node: number; holds: boolean }[] };
  assert.equal(r.reached, true);
  assert.deepEqual(
    r.nodes.map((n) => [n.node, n.holds]),
    [
      [1, true],
      [2, true],
      [3, true],
    ],
  );
});

test('a node down: nodes=all times out (504), quorum and 2 are reached', async () => {
  await nodes[2]!.close();
  app.prepare('INSERT INTO notes VALUES (200, ?)').run('two of three');
  const id = lastChangeId();
  const all = await get(`/replicated?after=${id}&nodes=all&timeout=1s`);
  assert.equal(all.status, 504, JSON.stringify(all.body));
  assert.equal(all.body.reached, false);
  assert.equal((await get(`/replicated?after=${id}&nodes=quorum&timeout=5s`)).status, 200);
  assert.equal((await get(`/replicated?after=${id}&nodes=2&timeout=5s`)).status, 200);
});
