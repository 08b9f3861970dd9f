/**
 * Publishing under failure (invariants 1 and 2):
 * - a publish that times out (the server frozen with SIGSTOP, a 300 ms
 *   publish_timeout) is retried under the same Nats-Msg-Id without
 *   reordering: per shard the stream holds the node's batches in increasing
 *   sequence, every row's versions in increasing order, no batch twice, and the
 *   last write wins everywhere;
 * - a change is marked published only after the PubAck: it stays pending
 *   (state 0, in the global log) while NATS is down, and becomes published
 *   once NATS is back;
 * - a batch acknowledged by JetStream but not yet marked published when the
 *   node stopped is re-published under its Nats-Msg-Id; after the duplicate
 *   window it lands in the stream a second time, and every receiver drops it
 *   (otherwise it would resurrect an older value over a newer write).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { changeLogTable, GLOBAL_LOG, OUTBOX, quoteIdent as q } from '../../src/cdc/names.ts';
import { decodeBody } from '../../src/codec/change-batch-codec.ts';
import type { Config } from '../../src/config/config.ts';
import { streamName } from '../../src/nats/naming.ts';
import { parseMsgId } from '../../src/replication/msg-id.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  actualRows,
  assertClean,
  dumpLogs,
  expectedRows,
  ITEMS_SCHEMA,
  RowWriter,
  freeze,
} from './fault-helpers.ts';

const SHARDS = 2;

function configure(extra?: (c: Config) => void): (c: Config) => void {
  return (c) => {
    c.replication_log.shards = SHARDS;
    c.replication_log.max_batch_changes = 5;
    c.nats.publish_timeout = 300;
    c.nats.reconnect_wait_seconds = 0.25;
    c.snapshot.enabled = false;
    extra?.(c);
  };
}

interface StreamMessage {
  readonly seq: number;
  readonly msgId: string | undefined;
  readonly data: Uint8Array;
}

/** Every message of a stream, in stream order. */
async function readStream(jsm: JetStreamManager, stream: string): Promise<StreamMessage[]> {
  const info = await jsm.streams.info(stream);
  const out: StreamMessage[] = [];
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq });
    if (m === null) continue;
    out.push({ seq: m.seq, msgId: m.header?.get('Nats-Msg-Id') || undefined, data: m.data });
  }
  return out;
}

function unableToPublish(node: TestNode): number {
  return node.logs.records.filter((r) => r.msg === 'Unable to publish').length;
}

function changeState(dbPath: string, rowId: number): { state: number | undefined; inGlobalLog: boolean } {
  const db = new Database(dbPath, { readonly: true });
  try {
    const row = db
      .prepare(
        `SELECT id, state FROM ${q(changeLogTable('items'))} WHERE val_id = ? ORDER BY id DESC LIMIT 1`,
      )
      .get(rowId) as { id: number; state: number } | undefined;
    const inGlobalLog =
      row !== undefined &&
      db
        .prepare(`SELECT 1 FROM ${q(GLOBAL_LOG)} WHERE table_name = 'items' AND change_table_id = ?`)
        .get(row.id) !== undefined;
    return { state: row?.state, inGlobalLog };
  } finally {
    db.close();
  }
}

function rowVersion(dbPath: string, id: number): number | undefined {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare('SELECT ver FROM items WHERE id = ?').pluck().get(id) as number | undefined;
  } finally {
    db.close();
  }
}

describe('publish retries', () => {
  it('a publish that times out is retried under the same Nats-Msg-Id, without reordering', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes: TestNode[] = [];
    let writer: RowWriter | undefined;
    let frozen = false;
    let passed = false;
    try {
      for (const id of [1, 2])
        nodes.push(
          await startNode({
            dir: dir.path,
            nodeId: id,
            urls: [server.url],
            schema: ITEMS_SCHEMA,
            configure: configure(),
          }),
        );
      const [a, b] = nodes as [TestNode, TestNode];
      const w = (writer = new RowWriter(a.dbPath, 1));
      // Successive versions of a few hot rows (each write its own transaction), spread over both shards.
      const hot = [1_000_001, 1_000_002, 1_000_003, 1_000_004];
      let i = 0;
      const writeSome = (n: number) => {
        for (let k = 0; k < n; k++) w.write(hot[i++ % hot.length]!);
      };
      writeSome(40);
      await waitFor('the first versions to reach node 2', () => rowVersion(b.dbPath, hot[0]!) !== undefined);

      // Freeze the server: the connection stays up, publishes time out (300 ms) and are retried.
      await freeze(server);
      frozen = true;
      const failuresBefore = unableToPublish(a);
      for (let round = 0; round < 20; round++) {
        writeSome(5);
        await new Promise((r) => setImmediate(r));
      }
      await waitFor('several publish timeouts', () => unableToPublish(a) >= failuresBefore + 4, {
        timeoutMs: 15_000,
      });
      writeSome(20);
      server.kill('SIGCONT');
      frozen = false;
      writeSome(40);

      const want = expectedRows([w]);
      await waitFor(
        'the last write of every row everywhere',
        () => nodes.every((n) => JSON.stringify(actualRows(n.dbPath)) === JSON.stringify(want)),
        { timeoutMs: 30_000, seen: () => nodes.map((n) => actualRows(n.dbPath)) },
      );
      const timeouts = a.logs.records.filter((r) => r.msg === 'Unable to publish');
      assert.ok(timeouts.length >= 4);
      assert.ok(
        timeouts.every((r) => typeof r.err === 'string' && r.err !== ''),
        'each failure says why',
      );

      // The stream: node 1's batches in increasing sequence per shard, none twice, row versions increasing.
      const nc = await connect({ servers: server.url });
      try {
        const jsm = await jetstreamManager(nc);
        let batches = 0;
        for (let shard = 1; shard <= SHARDS; shard++) {
          const messages = await readStream(jsm, streamName(a.config.nats.stream_prefix, shard));
          let lastSeq = 0;
          const lastVer = new Map<number, number>();
          for (const m of messages) {
            const id = parseMsgId(m.msgId);
            assert.ok(id !== undefined, `message ${m.seq} has our Nats-Msg-Id: ${m.msgId}`);
            if (id.origin !== 1) continue;
            assert.equal(id.shard, shard);
            assert.ok(
              id.seq > lastSeq,
              `shard ${shard}: batch ${id.seq} after ${lastSeq} (stream seq ${m.seq})`,
            );
            lastSeq = id.seq;
            batches++;
            for (const rec of decodeBody(m.data)) {
              const rowId = Number(rec.Payload.Row.id);
              const ver = Number(rec.Payload.Row.ver);
              assert.ok(
                ver > (lastVer.get(rowId) ?? 0),
                `row ${rowId}: v${ver} after v${lastVer.get(rowId)} in shard ${shard}`,
              );
              lastVer.set(rowId, ver);
            }
          }
        }
        assert.ok(batches > 0);
      } finally {
        await nc.close();
      }
      for (const n of nodes) assertClean(n.dbPath);
      passed = true;
    } finally {
      if (frozen) server.kill('SIGCONT');
      writer?.close();
      await Promise.allSettled(nodes.map((n) => n.close()));
      for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      await server.close();
    }
  });

  it('a change is marked published only after the PubAck (invariant 1)', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes: TestNode[] = [];
    let writer: RowWriter | undefined;
    let passed = false;
    try {
      for (const id of [1, 2])
        nodes.push(
          await startNode({
            dir: dir.path,
            nodeId: id,
            urls: [server.url],
            schema: ITEMS_SCHEMA,
            configure: configure(),
          }),
        );
      const [a, b] = nodes as [TestNode, TestNode];
      const w = (writer = new RowWriter(a.dbPath, 1));
      w.write(1_000_001);
      await waitFor('the first row to be published', () => changeState(a.dbPath, 1_000_001).state === 1);

      server.kill('SIGKILL');
      await waitFor('node 1 to see the outage', () => !a.node.status().natsConnected);
      const failuresBefore = unableToPublish(a);
      w.write(1_000_002);
      // While NATS is down the change stays pending, through several failed attempts.
      await waitFor('two failed publish attempts', () => unableToPublish(a) >= failuresBefore + 2, {
        timeoutMs: 15_000,
      });
      assert.deepEqual(changeState(a.dbPath, 1_000_002), { state: 0, inGlobalLog: true });
      assert.ok(a.node.status().pending >= 1);
      assert.equal(rowVersion(b.dbPath, 1_000_002), undefined);

      await server.restart();
      await waitFor('the change to be published once NATS is back', () => {
        const s = changeState(a.dbPath, 1_000_002);
        return s.state === 1 && !s.inGlobalLog;
      });
      await waitFor('node 2 to receive it', () => rowVersion(b.dbPath, 1_000_002) === 1);
      for (const n of nodes) assertClean(n.dbPath);
      passed = true;
    } finally {
      writer?.close();
      await Promise.allSettled(nodes.map((n) => n.close()));
      for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      await server.close();
    }
  });

  it('a batch acked but not marked published before a stop is re-published, and receivers drop the copy', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes: (TestNode | undefined)[] = [];
    const writers: RowWriter[] = [];
    let passed = false;
    const duplicateWindowMs = 1000;
    const cfg = configure((c) => {
      c.replication_log.duplicate_window = duplicateWindowMs;
    });
    const nc = await connect({ servers: server.url, maxReconnectAttempts: -1 });
    try {
      const jsm = await jetstreamManager(nc);
      nodes.push(
        await startNode({
          dir: dir.path,
          nodeId: 1,
          urls: [server.url],
          schema: ITEMS_SCHEMA,
          configure: cfg,
        }),
      );
      nodes.push(
        await startNode({
          dir: dir.path,
          nodeId: 2,
          urls: [server.url],
          schema: ITEMS_SCHEMA,
          configure: cfg,
        }),
      );
      const a = nodes[0]!;
      const b = nodes[1]!;
      const wa = new RowWriter(a.dbPath, 1);
      writers.push(wa);
      const row = 1_000_001;
      wa.write(row); // v1 on node 1
      await waitFor('v1 published and applied on node 2', () => {
        return changeState(a.dbPath, row).state === 1 && rowVersion(b.dbPath, row) === 1;
      });
      const dbPathA = a.dbPath;
      await a.close();
      nodes[0] = undefined;

      // Put node 1's database back in the state of a crash between the PubAck and the commit
      // that marks the batch published (that commit is one transaction: all of it or nothing).
      let shardOfRow = 0;
      let original: StreamMessage | undefined;
      for (let shard = 1; shard <= SHARDS && original === undefined; shard++) {
        for (const m of await readStream(jsm, streamName(a.config.nats.stream_prefix, shard))) {
          if (
            parseMsgId(m.msgId)?.origin === 1 &&
            decodeBody(m.data).some((r) => Number(r.Payload.Row.id) === row)
          ) {
            original = m;
            shardOfRow = shard;
          }
        }
      }
      assert.ok(original !== undefined, 'v1 is in the stream');
      const batch = parseMsgId(original.msgId)!;
      const ackedAt = Date.now();
      {
        const db = new Database(dbPathA);
        try {
          db.transaction(() => {
            const change = db
              .prepare(
                `SELECT id FROM ${q(changeLogTable('items'))} WHERE val_id = ? ORDER BY id DESC LIMIT 1`,
              )
              .pluck()
              .get(row) as number;
            const globalId = db
              .prepare('SELECT seq FROM sqlite_sequence WHERE name = ?')
              .pluck()
              .get(GLOBAL_LOG) as number;
            db.prepare(`UPDATE ${q(changeLogTable('items'))} SET state = 0 WHERE id = ?`).run(change);
            db.prepare(
              `INSERT INTO ${q(GLOBAL_LOG)} (id, change_table_id, table_name) VALUES (?, ?, 'items')`,
            ).run(globalId, change);
            const outbox = db
              .prepare(`UPDATE ${q(OUTBOX)} SET last_global_id = ?, payload = ? WHERE shard = ? AND seq = ?`)
              .run(globalId, original.data, shardOfRow, batch.seq);
            assert.equal(outbox.changes, 1, 'the outbox row of the batch');
          })();
        } finally {
          db.close();
        }
      }

      // Node 2 writes v2 of the same row: a newer write the re-published v1 must not undo.
      const v2 = 2;
      {
        const db = new Database(b.dbPath);
        db.prepare('UPDATE items SET ver = ?, origin = 2 WHERE id = ?').run(v2, row);
        db.close();
      }
      await waitFor('node 2 to publish and apply its newer write', () => rowVersion(b.dbPath, row) === v2);
      // Past JetStream's duplicate window the re-published batch is stored again.
      await waitFor('the duplicate window to pass', () => Date.now() > ackedAt + duplicateWindowMs + 500);

      nodes[0] = await startNode({ dir: dir.path, nodeId: 1, urls: [server.url], configure: cfg });
      const a2 = nodes[0];
      assert.ok(a2.logs.has('resuming the batch in flight at the last stop'));
      await waitFor('the re-published batch to be acknowledged and marked published', () => {
        const s = changeState(dbPathA, row);
        return s.state === 1 && !s.inGlobalLog;
      });
      const stream = streamName(a.config.nats.stream_prefix, shardOfRow);
      const copies = (await readStream(jsm, stream)).filter((m) => m.msgId === original.msgId);
      assert.equal(copies.length, 2, 'the batch is in the stream twice (the duplicate window had passed)');
      const lastSeq = (await jsm.streams.info(stream)).state.last_seq;
      await waitFor('both nodes to pass the copy', () =>
        nodes.every((n) => n!.node.status().shards.find((s) => s.shard === shardOfRow)!.position >= lastSeq),
      );
      // Receivers skipped the copy: node 2's newer write stands everywhere.
      for (const n of nodes) assert.equal(rowVersion(n!.dbPath, row), v2, n!.dbPath);
      for (const n of nodes) assertClean(n!.dbPath);
      passed = true;
    } finally {
      for (const w of writers) w.close();
      await Promise.allSettled(nodes.map((n) => n?.close()));
      for (const n of nodes) if (n) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      await nc.close();
      await server.close();
    }
  });
});
