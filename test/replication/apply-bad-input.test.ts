/**
 * Invariant 5 end to end: a message that can never apply is dead-lettered
 * (reason + raw bytes, metric) and replication continues; a message that waits
 * for this node's schema holds its shard, in order, while other shards go on,
 * and applies once the schema catches up (changed with the sqlite3 shell); the
 * operator's `-dead-letter-stuck SHARD` moves a held message out of the way.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { jetstream, type JetStreamClient } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Encoder } from 'cbor-x';
import { compressBody, encodeRecords } from '../../src/codec/change-batch-codec.ts';
import { changeLogTable, DEAD_LETTERS, POSITIONS } from '../../src/cdc/names.ts';
import { subjectName } from '../../src/nats/naming.ts';
import { createShardHasher, type ShardHasher } from '../../src/replication/shard-hasher.ts';
import {
  appConnection,
  spawnCli,
  startNode,
  writeConfigFile,
  type TestNode,
} from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { change, declaredZstdFrame, undeclaredZstdFrame } from './apply-messages.ts';
import { closeAll, counterValue, query, sqlite3Shell } from './converge-helpers.ts';

const SHARDS = 2;
const BASE = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';
/** Tables that exist only on the sender (node 1) at first. */
const SENDER_ONLY = `
  CREATE TABLE extra (id INTEGER PRIMARY KEY, v TEXT);
  CREATE TABLE gone (id INTEGER PRIMARY KEY, v TEXT);
`;

const dir = tempDir('hl-apply-bad-input-');
let nats: TestNatsServer | undefined;
let nc: NatsConnection | undefined;
let js: JetStreamClient;
let sender: TestNode | undefined;
let receiver: TestNode | undefined;
let hasher: ShardHasher;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  js = jetstream(nc);
  hasher = await createShardHasher(SHARDS);
  const configure = (c: { replication_log: { shards: number; verify_origins: boolean } }) => {
    c.replication_log.shards = SHARDS;
    // Hand-made messages test the decoder and applier here; origins: test/security/hostile-messages.test.ts.
    c.replication_log.verify_origins = false;
  };
  sender = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [nats.url],
    schema: BASE + SENDER_ONLY,
    configure,
  });
  receiver = await startNode({ dir: dir.path, nodeId: 2, urls: [nats.url], schema: BASE, configure });
});

after(async () => {
  await nc?.close();
  await closeAll([sender, receiver], () => nats?.close(), dir.remove);
});

/** The shard (1-based) of a row with an integer key. */
function shardOf(table: string, id: number): number {
  return hasher(table, [BigInt(id)]) + 1;
}

/** The smallest id > `after` whose row travels on `shard`. */
function keyOn(table: string, shard: number, after = 0): number {
  for (let id = after + 1; ; id++) if (shardOf(table, id) === shard) return id;
}

function write(node: TestNode, sql: string, ...params: unknown[]): void {
  const db = appConnection(node.dbPath);
  try {
    db.prepare(sql).run(...params);
  } finally {
    db.close();
  }
}

async function rowArrives(node: TestNode, table: string, id: number, v?: string): Promise<void> {
  await waitFor(
    `${table} ${id}${v === undefined ? '' : ` = ${v}`} on node ${node.config.node_id}`,
    () => {
      const rows = query<[bigint, string]>(node.dbPath, `SELECT id, v FROM "${table}" WHERE id = ?`, id);
      return rows.length === 1 && (v === undefined || rows[0]![1] === v);
    },
    {
      timeoutMs: 20_000,
      seen: () => ({ shards: node.node.status().shards, log: node.logs.messages().slice(-8) }),
    },
  );
}

function hasRow(node: TestNode, table: string, id: number): boolean {
  return query(node.dbPath, `SELECT 1 FROM "${table}" WHERE id = ?`, id).length > 0;
}

function shardState(node: TestNode, shard: number) {
  const s = node.node.status().shards.find((x) => x.shard === shard);
  assert.ok(s !== undefined, `shard ${shard} of node ${node.config.node_id}`);
  return s.state;
}

async function waitState(node: TestNode, shard: number, type: string): Promise<void> {
  await waitFor(
    `shard ${shard} of node ${node.config.node_id} to be ${type}`,
    () => shardState(node, shard).type === type,
    {
      timeoutMs: 20_000,
      seen: () => shardState(node, shard),
    },
  );
}

/** How many apply transactions a shard has run (blocked ones included). */
async function applyAttempts(node: TestNode, shard: number): Promise<number> {
  const h = await node.node.metrics.applyBatchSize.get();
  return (
    h.values.find((v) => v.metricName?.endsWith('_count') && v.labels.shard === String(shard))?.value ?? 0
  );
}

interface DeadLetter {
  shard: bigint;
  stream_seq: bigint;
  msg_id: string | null;
  reason: string;
  payload: Buffer | null;
}

function deadLetters(node: TestNode): DeadLetter[] {
  return query<unknown[]>(
    node.dbPath,
    `SELECT shard, stream_seq, msg_id, reason, payload FROM ${DEAD_LETTERS} ORDER BY id`,
  ).map(([shard, stream_seq, msg_id, reason, payload]) => ({
    shard: shard as bigint,
    stream_seq: stream_seq as bigint,
    msg_id: msg_id as string | null,
    reason: reason as string,
    payload: payload as Buffer | null,
  }));
}

test('garbage published by hand on a change subject is dead-lettered with its reason and bytes; replication continues', async () => {
  const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
  const garbage: { name: string; data: Uint8Array; reason: RegExp }[] = [
    { name: 'random bytes', data: Uint8Array.from([0xff, ...randomBytes(63)]), reason: /CBOR/ },
    { name: 'CBOR of the wrong shape', data: cbor.encode({ hello: 'world' }), reason: /not a change batch/ },
    {
      name: 'a batch targeting the positions table',
      data: encodeRecords([
        change('insert', POSITIONS, { shard: 1n, stream_seq: 1_000_000n, updated_at: 0n }),
      ]),
      reason: /not a user table/,
    },
    {
      name: 'a batch targeting sqlite_master',
      data: compressBody(
        encodeRecords([
          change('insert', 'sqlite_master', { type: 'table', name: 'x', sql: 'CREATE TABLE x (a)' }),
        ]),
      ),
      reason: /not a user table/,
    },
    {
      name: 'a zstd frame declaring a huge size',
      data: declaredZstdFrame(2 ** 40, 1024),
      reason: /declare 1099511627776 bytes/,
    },
    {
      name: 'a zstd frame declaring no size that inflates to 1 GiB',
      data: undeclaredZstdFrame(2 ** 30),
      reason: /larger than \d+ bytes/,
    },
  ];
  const subject = subjectName(receiver!.config.nats.subject_prefix, 1);
  const published: { seq: number; name: string; data: Uint8Array; reason: RegExp }[] = [];
  for (const g of garbage) {
    const ack = await js.publish(subject, g.data, { msgID: `garbage-${g.name}` });
    published.push({ ...g, seq: ack.seq });
  }
  // A later valid write on the same shard applies on every node.
  const id = keyOn('items', 1);
  write(sender!, 'INSERT INTO items (id, v) VALUES (?, ?)', id, 'after the garbage');
  await rowArrives(receiver!, 'items', id, 'after the garbage');

  for (const node of [receiver!, sender!]) {
    await waitFor(
      `${garbage.length} dead letters on node ${node.config.node_id}`,
      () => deadLetters(node).length === garbage.length,
      {
        timeoutMs: 20_000,
        seen: () => deadLetters(node).map((d) => d.reason),
      },
    );
    const dead = deadLetters(node);
    for (const p of published) {
      const d = dead.find((x) => x.shard === 1n && x.stream_seq === BigInt(p.seq));
      assert.ok(d !== undefined, `${p.name} is dead-lettered`);
      assert.equal(d.msg_id, `garbage-${p.name}`);
      assert.match(d.reason, p.reason, p.name);
      assert.ok(d.payload !== null && Buffer.from(p.data).equals(d.payload), `${p.name}: raw bytes kept`);
    }
    // Counted on the main thread once the worker's transaction returns: just after the rows are visible.
    await waitFor(
      `the dead-letter counter of node ${node.config.node_id} at ${garbage.length}`,
      async () => (await counterValue(node, 'deadLetters')) === garbage.length,
      { seen: () => deadLetters(node).length },
    );
    assert.equal(shardState(node, 1).type, 'running');
  }
  // The forged position did not move anything, and no table "x" appeared.
  const [pos] = query<[bigint]>(receiver!.dbPath, `SELECT stream_seq FROM ${POSITIONS} WHERE shard = 1`);
  assert.ok(pos !== undefined && pos[0] < 1_000_000n);
  assert.equal(query(receiver!.dbPath, "SELECT 1 FROM sqlite_master WHERE name = 'x'").length, 0);
});

test('a change for a table that exists only on the sender holds its shard in order while the other shard goes on', async () => {
  const held = shardOf('extra', keyOn('extra', 1)) === 1 ? 1 : 2;
  const other = held === 1 ? 2 : 1;
  const extraId = keyOn('extra', held);
  const sameShardItem = keyOn('items', held, 1000);
  const otherShardItem = keyOn('items', other, 1000);
  write(sender!, 'INSERT INTO extra (id, v) VALUES (?, ?)', extraId, 'first');
  write(sender!, 'UPDATE extra SET v = ? WHERE id = ?', 'second', extraId);
  write(sender!, 'INSERT INTO items (id, v) VALUES (?, ?)', sameShardItem, 'behind extra');
  write(sender!, 'INSERT INTO items (id, v) VALUES (?, ?)', otherShardItem, 'other shard');

  await waitState(receiver!, held, 'waiting-for-schema');
  await rowArrives(receiver!, 'items', otherShardItem, 'other shard');
  const state = shardState(receiver!, held);
  assert.equal(state.type, 'waiting-for-schema');
  assert.match(state.type === 'waiting-for-schema' ? state.reason : '', /extra/);
  assert.equal(
    hasRow(receiver!, 'items', sameShardItem),
    false,
    'a later message of the held shard waits too',
  );
  assert.ok(receiver!.logs.has("shard waits for this node's schema to catch up; other shards go on"));
  const waiting = await receiver!.node.metrics.shardWaiting.get();
  assert.equal(waiting.values.find((v) => v.labels.shard === String(held))?.value, 1);
  assert.equal(deadLetters(receiver!).filter((d) => /extra/.test(d.reason)).length, 0, 'not dead-lettered');
  // Still waiting after periodic re-checks (schema_retry_interval is 500 ms in tests).
  const attempts = await applyAttempts(receiver!, held);
  await waitFor(
    'two more apply attempts',
    async () => (await applyAttempts(receiver!, held)) >= attempts + 2,
    {
      timeoutMs: 10_000,
    },
  );
  assert.equal(hasRow(receiver!, 'items', sameShardItem), false);
  assert.equal(shardState(receiver!, held).type, 'waiting-for-schema');

  sqlite3Shell(receiver!.dbPath, 'CREATE TABLE extra (id INTEGER PRIMARY KEY, v TEXT);');
  await rowArrives(receiver!, 'extra', extraId, 'second');
  await rowArrives(receiver!, 'items', sameShardItem, 'behind extra');
  await waitState(receiver!, held, 'running');
  assert.ok(receiver!.logs.has('schema caught up; shard resumes'));
  // The new table is captured on the receiver like any other.
  assert.equal(query(receiver!.dbPath, `SELECT count(*) FROM "${changeLogTable('extra')}"`)[0]?.[0], 0n);
});

test('a change with a column this node lacks waits until ALTER TABLE ADD COLUMN', async () => {
  sqlite3Shell(sender!.dbPath, 'ALTER TABLE items ADD COLUMN color TEXT;');
  await waitFor(
    "the sender's capture to include the new column",
    () =>
      query<[bigint, string]>(sender!.dbPath, `PRAGMA table_info("${changeLogTable('items')}")`).some(
        (c) => c[1] === 'val_color',
      ),
    { timeoutMs: 20_000 },
  );
  const id = keyOn('items', 1, 2000);
  write(sender!, 'INSERT INTO items (id, v, color) VALUES (?, ?, ?)', id, 'colored', 'red');
  const otherExtra = keyOn('extra', 2, 2000);
  write(sender!, 'INSERT INTO extra (id, v) VALUES (?, ?)', otherExtra, 'shard 2 goes on');
  await waitState(receiver!, 1, 'waiting-for-schema');
  const state = shardState(receiver!, 1);
  assert.match(state.type === 'waiting-for-schema' ? state.reason : '', /color/);
  await rowArrives(receiver!, 'extra', otherExtra, 'shard 2 goes on');
  assert.equal(hasRow(receiver!, 'items', id), false);

  sqlite3Shell(receiver!.dbPath, 'ALTER TABLE items ADD COLUMN color TEXT;');
  await rowArrives(receiver!, 'items', id, 'colored');
  assert.deepEqual(query(receiver!.dbPath, 'SELECT color FROM items WHERE id = ?', id), [['red']]);
  await waitState(receiver!, 1, 'running');
});

test('-dead-letter-stuck SHARD moves the held message to the dead letters; the running node resumes with the next one', async () => {
  const shard = shardOf('gone', keyOn('gone', 2)) === 2 ? 2 : 1;
  const goneId = keyOn('gone', shard);
  const nextId = keyOn('extra', shard, 3000);
  write(sender!, 'INSERT INTO gone (id, v) VALUES (?, ?)', goneId, 'never here');
  await waitState(receiver!, shard, 'waiting-for-schema');
  // Written once the first is held, so that it travels in a message of its own (the
  // publisher batches consecutive changes of a shard, and the operator moves whole messages).
  write(sender!, 'INSERT INTO extra (id, v) VALUES (?, ?)', nextId, 'after the stuck one');
  const heldSeq = receiver!.node.consumers.find((c) => c.options.shard === shard)?.heldMessage?.seq;
  assert.ok(heldSeq !== undefined);
  assert.equal(hasRow(receiver!, 'extra', nextId), false);

  const configPath = writeConfigFile(receiver!.config, join(dir.path, 'receiver.toml'));
  const cli = spawnCli(['-config', configPath, '-dead-letter-stuck', String(shard)]);
  const code = await cli.exited;
  assert.equal(code, 0, cli.output.join('\n'));
  assert.ok(
    cli.output.some((l) => l.includes(`shard ${shard}: message ${heldSeq} moved to the dead letters`)),
    cli.output.join('\n'),
  );

  await rowArrives(receiver!, 'extra', nextId, 'after the stuck one');
  await waitState(receiver!, shard, 'running');
  assert.equal(query(receiver!.dbPath, "SELECT 1 FROM sqlite_master WHERE name = 'gone'").length, 0);
  assert.ok(hasRow(sender!, 'gone', goneId));
  const d = deadLetters(receiver!).find((x) => x.shard === BigInt(shard) && x.stream_seq === BigInt(heldSeq));
  assert.ok(d !== undefined, 'the held message is in the dead letters');
  assert.equal(d.reason, 'moved to the dead letters by the operator');
  assert.match(d.msg_id ?? '', new RegExp(`^1-${shard}-\\d+$`));
  assert.ok(d.payload !== null && d.payload.length > 0);
  // Nothing else was lost: the sender and the receiver agree on every shared row.
  for (const t of ['items', 'extra']) {
    assert.deepEqual(
      query(receiver!.dbPath, `SELECT id, v FROM ${t} ORDER BY id`),
      query(sender!.dbPath, `SELECT id, v FROM ${t} ORDER BY id`),
    );
  }
});
