/**
 * `[replication_log] max_hold`: a message that holds its shard waiting for this
 * node's schema longer than the limit goes to the dead letters by itself
 * (counted, logged, shown in health), and the shard goes on with later writes.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { DEAD_LETTERS } from '../../src/cdc/names.ts';
import { appConnection, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query } from './converge-helpers.ts';

const BASE = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';
const MAX_HOLD_MS = 1500;
const dir = tempDir('hl-max-hold-');
let nats: TestNatsServer | undefined;
let sender: TestNode | undefined;
let receiver: TestNode | undefined;

before(async () => {
  nats = await startNatsServer();
  sender = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [nats.url],
    schema: BASE + 'CREATE TABLE extra (id INTEGER PRIMARY KEY, v TEXT);',
  });
  receiver = await startNode({
    dir: dir.path,
    nodeId: 2,
    urls: [nats.url],
    schema: BASE,
    configure: (c) => {
      c.replication_log.max_hold = MAX_HOLD_MS;
    },
  });
});

after(async () => {
  await closeAll([sender, receiver], () => nats?.close(), dir.remove);
});

function write(sql: string): void {
  const db = appConnection(sender!.dbPath);
  try {
    db.exec(sql);
  } finally {
    db.close();
  }
}

test('a message held for the schema longer than max_hold is dead-lettered by itself; the shard goes on', async () => {
  write("INSERT INTO extra VALUES (1, 'only on node 1')");
  const shard = () => receiver!.node.status().shards[0]!;
  await waitFor('the shard to wait for the schema', () => shard().state.type === 'waiting-for-schema', {
    seen: () => shard().state,
  });
  const heldAt = Date.now();
  write("INSERT INTO items VALUES (1, 'behind the held one')");
  await waitFor(
    'the write behind it on node 2',
    () => query(receiver!.dbPath, 'SELECT v FROM items WHERE id = 1').length === 1,
    { timeoutMs: 20_000, seen: () => ({ state: shard().state, log: receiver!.logs.messages().slice(-4) }) },
  );
  assert.ok(Date.now() - heldAt >= MAX_HOLD_MS - 100, 'not before max_hold');
  const reasons = query<[string]>(receiver!.dbPath, `SELECT reason FROM ${DEAD_LETTERS}`).map((r) => r[0]);
  assert.equal(reasons.length, 1);
  assert.match(reasons[0]!, /past max_hold: .*extra/);
  const m = await receiver!.node.metrics.holdsExpired.get();
  assert.equal(
    m.values.reduce((n, v) => n + v.value, 0),
    1,
  );
  assert.ok(receiver!.logs.has('moved to the dead letters'));
  assert.equal(shard().state.type, 'running');
  assert.equal(shard().deadLetters, 1, 'health shows the dead letter');
});
