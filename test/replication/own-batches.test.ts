/**
 * A node skips replaying its own batches only when that is provably a no-op
 * (src/replication/own-batches.ts): no replayed write since the batch's first
 * change was committed. Applier-level cases on a real SQLite file with capture
 * installed, then two nodes on a real nats-server.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { GLOBAL_LOG, POSITIONS } from '../../src/cdc/names.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { BatchApplier, type InboundMessage } from '../../src/replication/batch-applier.ts';
import { OwnBatches } from '../../src/replication/own-batches.ts';
import { appConnection, createDatabase, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { change, message } from './apply-messages.ts';
import { closeAll, counterValue, insertItems, query, startTwoNodes } from './converge-helpers.ts';

const SELF = 1;
const OTHER = 2;
const SHARD = 1;
const dir = tempDir('hl-own-batches-');
after(() => dir.remove());

let fileNo = 0;
/** A captured database, its applier (with the watermark of `own`) and an application connection. */
function fixture() {
  const path = join(dir.path, `own-${++fileNo}.db`);
  createDatabase(path, 'CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT);');
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  installCapture(db, new TableFilter([], []), { captureWrites: true });
  const own = new OwnBatches(SELF);
  const applier = new BatchApplier(db, { includeTables: [], excludeTables: [], watermark: own.watermark });
  const app = appConnection(path);
  const lastGlobalId = () =>
    Number(db.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck().get(GLOBAL_LOG) ?? 0);
  const value = (k: string) => db.prepare('SELECT v FROM t WHERE k = ?').pluck().get(k);
  let seq = 0;
  /** A stream message; an own one is registered and claimed as the publisher and consumer do. */
  const msg = (origin: number, k: string, v: string, firstGlobalId?: number): InboundMessage => {
    seq++;
    const m = message(seq, [change('insert', 't', { k, v }, origin)], {
      id: { origin, shard: SHARD, seq },
    });
    if (firstGlobalId === undefined) return m;
    own.register(SHARD, seq, { firstGlobalId, changes: 1 }, m.data);
    const claim = own.claim(SHARD, m);
    assert.ok(claim, 'a registered batch is claimed');
    return { ...m, own: claim };
  };
  return {
    own,
    applier,
    app,
    lastGlobalId,
    value,
    msg,
    close: () => {
      app.close();
      db.close();
    },
  };
}

test('an own batch committed after the last replayed write is not replayed', () => {
  const f = fixture();
  try {
    f.own.raiseWatermark(f.lastGlobalId()); // the publisher opens
    f.app.prepare("INSERT INTO t VALUES ('a', 'local')").run();
    const first = f.lastGlobalId();
    // A later local write to the same row: replaying the first batch would put 'local' back.
    f.app.prepare("UPDATE t SET v = 'later' WHERE k = 'a'").run();
    const r = f.applier.apply(SHARD, [f.msg(SELF, 'a', 'local', first)]);
    assert.equal(r.skippedOwn, 1);
    assert.equal(r.appliedChanges, 1);
    assert.equal(f.value('a'), 'later');
  } finally {
    f.close();
  }
});

test('an own batch is replayed when a remote change was applied after it was committed', () => {
  const f = fixture();
  try {
    f.own.raiseWatermark(f.lastGlobalId());
    f.app.prepare("INSERT INTO t VALUES ('b', 'local')").run();
    const first = f.lastGlobalId();
    // Ordered before ours in the stream, applied here after our commit: it overwrote our row.
    const remote = f.applier.apply(SHARD, [f.msg(OTHER, 'b', 'remote')]);
    assert.equal(remote.appliedChanges, 1);
    assert.equal(f.value('b'), 'remote');
    const r = f.applier.apply(SHARD, [f.msg(SELF, 'b', 'local', first)]);
    assert.equal(r.skippedOwn, 0);
    assert.equal(f.value('b'), 'local', 'the stream order puts ours last, as on every other node');
  } finally {
    f.close();
  }
});

test('within one apply transaction, a replayed message blocks skipping the own ones after it', () => {
  const f = fixture();
  try {
    f.own.raiseWatermark(f.lastGlobalId());
    f.app.prepare("INSERT INTO t VALUES ('c', 'local')").run();
    const first = f.lastGlobalId();
    const r = f.applier.apply(SHARD, [f.msg(OTHER, 'c', 'remote'), f.msg(SELF, 'c', 'local', first)]);
    assert.equal(r.skippedOwn, 0);
    assert.equal(f.value('c'), 'local');
  } finally {
    f.close();
  }
});

test('a remote change applied before the local commit does not block the skip', () => {
  const f = fixture();
  try {
    f.own.raiseWatermark(f.lastGlobalId());
    f.applier.apply(SHARD, [f.msg(OTHER, 'd', 'remote')]);
    f.app.prepare("UPDATE t SET v = 'local' WHERE k = 'd'").run();
    const first = f.lastGlobalId();
    const r = f.applier.apply(SHARD, [f.msg(SELF, 'd', 'local', first)]);
    assert.equal(r.skippedOwn, 1);
    assert.equal(f.value('d'), 'local');
  } finally {
    f.close();
  }
});

test('changes committed before the publisher opened are always replayed', () => {
  const f = fixture();
  try {
    f.app.prepare("INSERT INTO t VALUES ('e', 'local')").run();
    const first = f.lastGlobalId();
    f.app.prepare("UPDATE t SET v = 'later' WHERE k = 'e'").run();
    f.own.raiseWatermark(f.lastGlobalId()); // the publisher opens after both commits
    const r = f.applier.apply(SHARD, [f.msg(SELF, 'e', 'local', first)]);
    assert.equal(r.skippedOwn, 0);
    assert.equal(f.value('e'), 'local');
  } finally {
    f.close();
  }
});

test('only the exact published bytes, under this node id and shard, once, are claimed', () => {
  const own = new OwnBatches(SELF);
  const m = message(5, [change('insert', 't', { k: 'x', v: '1' }, SELF)], {
    id: { origin: SELF, shard: SHARD, seq: 5 },
  });
  own.register(SHARD, 5, { firstGlobalId: 9, changes: 1 }, m.data);
  const tampered = { ...m, data: Uint8Array.from(m.data, (b, i) => (i === m.data.length - 1 ? b ^ 1 : b)) };
  assert.equal(own.claim(SHARD, tampered), undefined, 'different bytes under our msg id');
  own.register(SHARD, 5, { firstGlobalId: 9, changes: 1 }, m.data);
  assert.equal(own.claim(2, m), undefined, 'another shard');
  assert.equal(
    new OwnBatches(OTHER).claim(SHARD, m),
    undefined,
    'another node id: not a batch this process published',
  );
  assert.deepEqual(own.claim(SHARD, m), { firstGlobalId: 9, changes: 1 });
  assert.equal(own.claim(SHARD, m), undefined, 'claimed once');
  own.register(SHARD, 5, { firstGlobalId: 9, changes: 1 }, m.data);
  own.forget();
  assert.equal(own.claim(SHARD, m), undefined, 'forgotten after a snapshot swap');
});

test('two nodes: the writer does not replay its own changes, the other applies them, and both converge', async () => {
  const nats = await startNatsServer();
  const nodes: TestNode[] = [];
  try {
    const [a, b] = await startTwoNodes(nodes, {
      dir: dir.path,
      urls: [nats.url],
      schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);',
      configure: (c) => {
        c.replication_log.shards = 2;
      },
    });
    const app = appConnection(a.dbPath);
    insertItems(app, 1, 300, (i) => `v${i}`);
    app.close();
    // The counter moves on the main thread once the worker's transaction returns, just after the rows show.
    await waitFor(
      'node 2 holds the 300 rows and counted them applied',
      async () =>
        query(b.dbPath, 'SELECT count(*) FROM items')[0]![0] === 300n &&
        (await counterValue(b, 'applied')) === 300,
    );
    await waitFor(
      'node 1 has consumed its own 300 changes',
      async () => (await counterValue(a, 'applied')) === 300,
    );
    assert.equal(await counterValue(a, 'ownSkipped'), 300, 'the writer skipped replaying all of them');
    assert.equal(await counterValue(b, 'ownSkipped'), 0);
    assert.deepEqual(
      query(a.dbPath, 'SELECT * FROM items ORDER BY id'),
      query(b.dbPath, 'SELECT * FROM items ORDER BY id'),
    );
    // Skipped without a transaction of their own: the position is stored within a second.
    const inMemory = a.node.consumers.map((c) => [c.options.shard, c.position]);
    await waitFor('node 1 stores the position its skips reached', () => {
      const stored = query(a.dbPath, `SELECT shard, stream_seq FROM ${POSITIONS} ORDER BY shard`).map(
        ([shard, seq]) => [Number(shard), Number(seq)],
      );
      return JSON.stringify(stored) === JSON.stringify(inMemory);
    });
    // Remote changes after the skips apply as usual, on both nodes.
    const other = appConnection(b.dbPath);
    other.prepare("UPDATE items SET v = 'from 2' WHERE id <= 10").run();
    other.close();
    await waitFor(
      "node 1 applies node 2's update",
      () => query(a.dbPath, "SELECT count(*) FROM items WHERE v = 'from 2'")[0]![0] === 10n,
    );
    assert.equal(await counterValue(a, 'deadLetters'), 0);
    // Before a snapshot copies the database, the skips' positions are stored at once (storePosition),
    // not up to a second later: a snapshot must not say less than its rows hold.
    const more = appConnection(a.dbPath);
    insertItems(more, 301, 400, (i) => `v${i}`);
    more.close();
    await waitFor(
      'node 1 skipped its 100 new changes',
      async () => (await counterValue(a, 'ownSkipped')) === 400,
      {
        intervalMs: 5,
      },
    );
    await Promise.all(a.node.consumers.map((c) => c.storePosition()));
    assert.deepEqual(
      query(a.dbPath, `SELECT shard, stream_seq FROM ${POSITIONS} ORDER BY shard`).map(([shard, seq]) => [
        Number(shard),
        Number(seq),
      ]),
      a.node.consumers.map((c) => [c.options.shard, c.position]),
    );
  } finally {
    await closeAll(nodes, () => nats.close());
  }
});

test('a change refused as too large stops the skip: the writer replays its batch like every node', async () => {
  const nats = await startNatsServer();
  const nodes: TestNode[] = [];
  const nodeDir = join(dir.path, 'refused');
  mkdirSync(nodeDir);
  try {
    const [a, b] = await startTwoNodes(nodes, {
      dir: nodeDir,
      urls: [nats.url],
      schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);',
      configure: (c) => {
        c.replication_log.max_batch_bytes = 4096;
      },
    });
    const app = appConnection(a.dbPath);
    app.prepare("INSERT INTO items VALUES (1, 'small')").run();
    // Never published (state 2): the insert's batch must not be skipped on node 1.
    app.prepare('UPDATE items SET v = ? WHERE id = 1').run('x'.repeat(10_000));
    app.close();
    await waitFor('node 2 has row 1', () => query(b.dbPath, 'SELECT count(*) FROM items')[0]![0] === 1n);
    await waitFor('node 1 consumed its batch', async () => (await counterValue(a, 'applied')) >= 1);
    assert.equal(await counterValue(a, 'ownSkipped'), 0);
    const value = (path: string) => query(path, 'SELECT v FROM items WHERE id = 1')[0]![0];
    assert.equal(value(b.dbPath), 'small');
    assert.equal(value(a.dbPath), 'small', 'node 1 holds what the stream says, as node 2 does');
  } finally {
    await closeAll(nodes, () => nats.close());
  }
});
