/**
 * Node modes and table filters, on the receiving side:
 * - `publish = false` (read replica) applies the others' changes and publishes
 *   nothing of its own: its local writes are not even captured.
 * - `replicate = false` (write-only) publishes and applies nothing, not even
 *   the others' changes (HarmonyLite's replicate=false still applied them).
 * - `exclude_tables` / `include_tables` on a receiver: changes of tables it
 *   does not take are skipped by design: not waited on, not dead-lettered.
 *
 * One shard, so "a later message applied" proves every earlier one was handled.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { DEAD_LETTERS, GLOBAL_LOG, POSITIONS } from '../../src/cdc/names.ts';
import { streamName } from '../../src/nats/naming.ts';
import { appConnection, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, counterValue, query } from './converge-helpers.ts';

const SCHEMA = `
  CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE notes (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE secret_a (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE secret_b (id INTEGER PRIMARY KEY, v TEXT);
`;
/** The node excluding secret_* has only one of them: the other must not be waited for either. */
const SCHEMA_WITHOUT_SECRET_B = `
  CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE notes (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE secret_a (id INTEGER PRIMARY KEY, v TEXT);
`;
/** The node including only items has no notes table at all. */
const SCHEMA_ITEMS_ONLY = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';

const dir = tempDir('hl-apply-modes-');
let nats: TestNatsServer | undefined;
let writer: TestNode | undefined;
let replica: TestNode | undefined;
let writeOnly: TestNode | undefined;
let excluding: TestNode | undefined;
let including: TestNode | undefined;

before(async () => {
  nats = await startNatsServer();
  const url = nats.url;
  const start = (nodeId: number, schema: string, configure: (c: TestNode['config']) => void = () => {}) =>
    startNode({
      dir: dir.path,
      nodeId,
      urls: [url],
      schema,
      configure: (c) => {
        c.replication_log.shards = 1;
        configure(c);
      },
    });
  [writer, replica, writeOnly, excluding, including] = await Promise.all([
    start(1, SCHEMA),
    start(2, SCHEMA, (c) => {
      c.publish = false;
    }),
    start(3, SCHEMA, (c) => {
      c.replicate = false;
    }),
    start(4, SCHEMA_WITHOUT_SECRET_B, (c) => {
      c.exclude_tables = ['secret_*'];
    }),
    start(5, SCHEMA_ITEMS_ONLY, (c) => {
      c.include_tables = ['items'];
    }),
  ]);
});

after(() => closeAll([writer, replica, writeOnly, excluding, including], () => nats?.close(), dir.remove));

function write(node: TestNode, sql: string, ...params: unknown[]): void {
  const db = appConnection(node.dbPath);
  try {
    db.prepare(sql).run(...params);
  } finally {
    db.close();
  }
}

function value(node: TestNode, table: string, id: number): string | undefined {
  return query<[string]>(node.dbPath, `SELECT v FROM ${table} WHERE id = ?`, id)[0]?.[0];
}

async function arrives(node: TestNode, table: string, id: number, v: string): Promise<void> {
  await waitFor(`${table} ${id} = ${v} on node ${node.config.node_id}`, () => value(node, table, id) === v, {
    timeoutMs: 20_000,
    seen: () => ({ v: value(node, table, id), shards: node.node.status().shards }),
  });
}

/** Nats-Msg-Id of every message of the one shard stream. */
async function streamMsgIds(): Promise<string[]> {
  const nc = await connect({ servers: nats!.url });
  try {
    const jsm = await jetstreamManager(nc);
    const stream = streamName(writer!.config.nats.stream_prefix, 1);
    const { state } = await jsm.streams.info(stream);
    const ids: string[] = [];
    for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      ids.push(m?.header?.get('Nats-Msg-Id') ?? '');
    }
    return ids;
  } finally {
    await nc.close();
  }
}

function triggers(node: TestNode): string[] {
  return query<[string]>(
    node.dbPath,
    "SELECT name FROM sqlite_master WHERE type = 'trigger' ORDER BY name",
  ).map((r) => r[0]);
}

test('publish = false: a read replica applies the others’ changes and never captures nor publishes its own', async () => {
  assert.deepEqual(triggers(replica!), [], 'no capture triggers on a read replica');
  write(replica!, 'INSERT INTO items (id, v) VALUES (?, ?)', 100, 'local to the replica');
  write(replica!, 'INSERT INTO notes (id, v) VALUES (?, ?)', 100, 'local to the replica');
  write(writer!, 'INSERT INTO items (id, v) VALUES (?, ?)', 1, 'from the writer');
  await arrives(replica!, 'items', 1, 'from the writer');
  await arrives(including!, 'items', 1, 'from the writer');
  assert.equal(query(replica!.dbPath, `SELECT count(*) FROM ${GLOBAL_LOG}`)[0]?.[0], 0n, 'nothing captured');
  for (const n of [writer!, excluding!, including!]) assert.equal(value(n, 'items', 100), undefined);
  const ids = await streamMsgIds();
  assert.ok(ids.length > 0);
  assert.ok(
    ids.every((id) => !id.startsWith(`${replica!.config.node_id}-`)),
    `no message from the replica: ${ids.join(', ')}`,
  );
  assert.equal(replica!.node.status().pending, 0);
});

test('replicate = false: a write-only node publishes its changes and applies nothing, not even others’', async () => {
  assert.equal(writeOnly!.node.consumers.length, 0, 'no consumers on a write-only node');
  write(writeOnly!, 'INSERT INTO items (id, v) VALUES (?, ?)', 2, 'from the write-only node');
  await arrives(writer!, 'items', 2, 'from the write-only node');
  await arrives(replica!, 'items', 2, 'from the write-only node');
  write(writer!, 'INSERT INTO items (id, v) VALUES (?, ?)', 3, 'from the writer again');
  write(writer!, 'UPDATE items SET v = ? WHERE id = 2', 'changed by the writer');
  await arrives(replica!, 'items', 2, 'changed by the writer');
  await arrives(replica!, 'items', 3, 'from the writer again');
  // The write-only node holds exactly what it wrote: none of the writer's changes, not its own echoed back.
  assert.equal(value(writeOnly!, 'items', 1), undefined);
  assert.equal(value(writeOnly!, 'items', 3), undefined);
  assert.equal(value(writeOnly!, 'items', 2), 'from the write-only node');
  assert.deepEqual(query(writeOnly!.dbPath, `SELECT * FROM ${POSITIONS}`), [], 'no stream position stored');
  assert.equal(await counterValue(writeOnly!, 'applied'), 0);
  assert.ok((await streamMsgIds()).some((id) => id.startsWith(`${writeOnly!.config.node_id}-`)));
});

test('exclude_tables / include_tables on a receiver: changes of other tables are skipped, not waited on, not dead-lettered', async () => {
  write(excluding!, 'INSERT INTO secret_a (id, v) VALUES (?, ?)', 1, 'kept local by the excluding node');
  write(writer!, 'INSERT INTO secret_a (id, v) VALUES (?, ?)', 1, 'secret of the writer');
  write(writer!, 'INSERT INTO secret_b (id, v) VALUES (?, ?)', 1, 'a table the excluding node lacks');
  write(writer!, 'INSERT INTO notes (id, v) VALUES (?, ?)', 1, 'a table the including node lacks');
  write(writer!, 'INSERT INTO items (id, v) VALUES (?, ?)', 4, 'after the skipped ones');

  // One shard: items 4 applied means every earlier message was handled.
  await arrives(excluding!, 'items', 4, 'after the skipped ones');
  await arrives(including!, 'items', 4, 'after the skipped ones');
  await arrives(excluding!, 'notes', 1, 'a table the including node lacks');
  await arrives(replica!, 'secret_b', 1, 'a table the excluding node lacks');
  await arrives(replica!, 'secret_a', 1, 'secret of the writer');

  assert.equal(value(excluding!, 'secret_a', 1), 'kept local by the excluding node');
  assert.equal(query(excluding!.dbPath, "SELECT 1 FROM sqlite_master WHERE name = 'secret_b'").length, 0);
  assert.equal(query(including!.dbPath, "SELECT 1 FROM sqlite_master WHERE name = 'notes'").length, 0);
  for (const n of [excluding!, including!]) {
    assert.deepEqual(query(n.dbPath, `SELECT * FROM ${DEAD_LETTERS}`), [], 'nothing dead-lettered');
    assert.equal(await counterValue(n, 'deadLetters'), 0);
    for (const s of n.node.status().shards) assert.equal(s.state.type, 'running', JSON.stringify(s));
  }
  // Excluded tables are not captured either: the excluding node's own secret stays local.
  assert.ok(
    triggers(excluding!).every((t) => !t.includes('secret_')),
    triggers(excluding!).join(', '),
  );
  assert.equal(value(writer!, 'secret_a', 1), 'secret of the writer');
  assert.equal(value(replica!, 'secret_a', 1), 'secret of the writer');
});
