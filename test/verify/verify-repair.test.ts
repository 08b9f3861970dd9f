/**
 * `-verify` and `-verify -repair` on three nodes (shards 2, one real
 * nats-server) while an application keeps writing: a node is broken on purpose
 * in three ways (a row changed and another deleted with capture removed, and a
 * change skipped as a dead-lettered message is), verify names exactly those
 * keys with each node's version, and repair makes every node converge.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type Database from 'better-sqlite3';
import { runVerify } from '../../src/cli/run-verify.ts';
import { POSITIONS, triggerName } from '../../src/cdc/names.ts';
import { createLogger } from '../../src/logger.ts';
import { streamName } from '../../src/nats/naming.ts';
import {
  appConnection,
  LogCapture,
  startNode,
  waitConverged,
  type TestNode,
} from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query } from '../replication/converge-helpers.ts';

const SCHEMA = `CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT NOT NULL);
  CREATE TABLE other (k TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;`;
const dir = tempDir('hl-verify-');
let nats: TestNatsServer;
const nodes: (TestNode | undefined)[] = [];
const apps: Database.Database[] = [];

function start(nodeId: number, schema?: string): Promise<TestNode> {
  return startNode({
    dir: dir.path,
    nodeId,
    urls: [nats.url],
    ...(schema === undefined ? {} : { schema }),
    configure: (c) => {
      c.replication_log.shards = 2;
    },
  });
}

async function verify(repair = false): Promise<{ code: number; text: string }> {
  let text = '';
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  const logger = createLogger({ verbose: false, format: 'json', destination: new LogCapture() });
  const code = await runVerify(nodes[0]!.config, logger, { repair, settleMs: 300 }, out);
  return { code, text };
}

/** Runs `sql` on a node's database with the table's capture trigger of `kind` absent, put back as it was. */
function behindCapture(db: Database.Database, kind: 'update' | 'delete', sql: string): void {
  const name = triggerName('items', kind);
  const create = db
    .prepare("SELECT sql FROM sqlite_schema WHERE type = 'trigger' AND name = ?")
    .pluck()
    .get(name) as string;
  db.transaction(() => {
    db.exec(`DROP TRIGGER "${name}"`);
    db.exec(sql);
    db.exec(create);
  }).immediate();
}

before(async () => {
  nats = await startNatsServer();
  for (const id of [1, 2, 3]) nodes.push(await start(id, SCHEMA));
  for (const n of nodes) apps.push(appConnection(n!.dbPath));
  const insert = apps[0]!.prepare('INSERT INTO items VALUES (?, ?)');
  apps[0]!.transaction(() => {
    for (let i = 1; i <= 200; i++) insert.run(i, `v${i}`);
  })();
  apps[1]!.prepare("INSERT INTO other VALUES ('a', 1), ('b', 2)").run();
  await waitConverged(
    nodes.map((n) => n!.dbPath),
    ['items', 'other'],
  );
});

after(async () => {
  for (const a of apps) a.close();
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

test('verify: all nodes agree after convergence', async () => {
  const { code, text } = await verify();
  assert.equal(code, 0, text);
  assert.match(text, /all 3 nodes agree on 202 rows/);
  assert.match(text, /table items: 200 rows checked; all nodes agree/);
});

test('verify finds exactly the broken keys, repair makes them converge, with writes going on', async () => {
  // A change node 1 never applies: its position moves past the message, as a dead letter's does.
  await nodes[0]!.close();
  apps[0]!.close();
  // Not valid UTF-8 (a Latin-1 e-acute): repair must re-publish the exact bytes.
  apps[1]!.prepare("UPDATE items SET v = CAST(x'6f6e2032e9' AS TEXT) WHERE id = 7").run();
  apps[1]!.prepare('DELETE FROM items WHERE id = 9').run();
  await waitFor(
    'the update and the delete on node 3',
    () =>
      query(nodes[2]!.dbPath, 'SELECT hex(v) FROM items WHERE id IN (7, 9)').map(String).join() ===
      '6F6E2032E9',
  );
  const nc = await connect({ servers: nats.url });
  const jsm = await jetstreamManager(nc);
  const tails = await Promise.all(
    [1, 2].map(
      async (s) =>
        (await jsm.streams.info(streamName(nodes[0]!.config.nats.stream_prefix, s))).state.last_seq,
    ),
  );
  await nc.close();
  const db1 = appConnection(nodes[0]!.dbPath);
  tails.forEach((seq, i) =>
    db1.prepare(`UPDATE "${POSITIONS}" SET stream_seq = ? WHERE shard = ?`).run(seq, i + 1),
  );
  db1.close();
  nodes[0] = await start(1);
  apps[0] = appConnection(nodes[0].dbPath);
  // Rows changed and deleted behind the daemon's back (capture trigger dropped, then put back).
  behindCapture(apps[1]!, 'update', "UPDATE items SET v = 'escaped on 2' WHERE id = 3");
  behindCapture(apps[2]!, 'delete', 'DELETE FROM items WHERE id = 5');

  // The application keeps writing on node 3 meanwhile.
  let n = 1000;
  const writer = setInterval(() => apps[2]!.prepare('INSERT INTO items VALUES (?, ?)').run(n, `w${n++}`), 20);
  try {
    const before = await verify();
    assert.equal(before.code, 1, before.text);
    const differing = [...before.text.matchAll(/^ {2}DIFFERS \((\d+)\)$/gm)]
      .map((m) => Number(m[1]))
      .sort((a, b) => a - b);
    assert.deepEqual(differing, [3, 5, 7, 9], before.text);
    assert.match(
      before.text,
      /DIFFERS \(9\)\n {4}node 1: version \d+ \(origin 1[^\n]*, row\n {4}node 2: version \d+ \(origin 2[^\n]*, no row\n/,
    );
    assert.match(
      before.text,
      /DIFFERS \(7\)\n {4}node 1: version \d+ \(origin 1[^\n]*\n {4}node 2: version \d+ \(origin 2/,
    );
    assert.match(before.text, /node 2: version \d+ \(origin 1.*escaped capture/);
    assert.match(before.text, /node 3: version \d+ \(origin 1.*no row, row differs from the index/);

    const repaired = await verify(true);
    assert.equal(repaired.code, 0, repaired.text);
    assert.match(repaired.text, /node 2: items: logged 1 row\(s\) that escaped capture/);
    assert.match(repaired.text, /node 3: items: logged 1 row\(s\) that escaped capture/);
    assert.match(repaired.text, /node [23]: items \(7\): re-published the row at version \d+ \(origin 2\)/);
    assert.match(
      repaired.text,
      /node [23]: items \(9\): re-published its delete at version \d+ \(origin 2\)/,
    );
  } finally {
    clearInterval(writer);
  }
  await waitConverged(
    nodes.map((x) => x!.dbPath),
    ['items', 'other'],
  );
  for (const node of nodes) {
    assert.deepEqual(query(node!.dbPath, 'SELECT hex(v) FROM items WHERE id IN (3, 5, 7, 9) ORDER BY id'), [
      [Buffer.from('escaped on 2').toString('hex').toUpperCase()],
      ['6F6E2032E9'],
    ]);
  }
  const last = await verify();
  assert.equal(last.code, 0, last.text);
  assert.match(last.text, /all 3 nodes agree/);
});
