/**
 * Restarts with many messages retained in the stream (HarmonyLite's defect 3:
 * messages skipped on restart were never acknowledged, so its consumer stalled
 * at MaxAckPending = 1000 once a stream held that many). With 3000 single-change
 * messages retained (max_entries 5000):
 * - a node restarted after applying them resumes at its stored position and
 *   applies new messages promptly;
 * - a node that was down while they were written catches up completely.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Config } from '../../src/config/config.ts';
import { streamName } from '../../src/nats/naming.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  allExpected,
  assertClean,
  countOrigin,
  diffRows,
  dumpLogs,
  ITEMS_SCHEMA,
  RowWriter,
} from './fault-helpers.ts';

const RETAINED = 3000;

const configure =
  (writer: boolean) =>
  (c: Config): void => {
    c.replication_log.shards = 1;
    c.replication_log.max_entries = 5000;
    // One change per message on the writer, so 3000 transactions are 3000 small messages.
    if (writer) c.replication_log.max_batch_changes = 1;
    c.snapshot.enabled = false;
  };

describe('restart with many retained messages', () => {
  it(`with ${RETAINED} messages retained: a restarted node keeps applying, a node that was down catches up`, async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes = new Map<number, TestNode>();
    const logs: [string, Record<string, unknown>[]][] = [];
    let writer: RowWriter | undefined;
    let passed = false;
    const start = async (id: number, schema?: string) => {
      const n = await startNode({
        dir: dir.path,
        nodeId: id,
        urls: [server.url],
        ...(schema === undefined ? {} : { schema }),
        configure: configure(id === 1),
      });
      nodes.set(id, n);
      logs.push([`node ${id}`, n.logs.records]);
      return n;
    };
    const stop = async (id: number) => {
      await nodes.get(id)?.close();
      nodes.delete(id);
    };
    const paths = () => [...nodes.values()].map((n) => n.dbPath);
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await jetstreamManager(nc);
      const a = await start(1, ITEMS_SCHEMA);
      await start(2, ITEMS_SCHEMA);
      await start(3, ITEMS_SCHEMA);
      const w = (writer = new RowWriter(a.dbPath, 1));
      let next = 1_000_001;
      for (let i = 0; i < 10; i++) w.write(next++);
      await waitFor('the first rows everywhere', () => allExpected(paths(), [w]));
      const pathC = nodes.get(3)!.dbPath;

      // Node 3 is down while 3000 single-row transactions are written (3000 messages).
      await stop(3);
      for (let i = 0; i < RETAINED; i++) w.write(next++);
      const stream = streamName(a.config.nats.stream_prefix, 1);
      await waitFor(
        `${RETAINED} more messages in the stream, applied on node 2`,
        async () =>
          (await jsm.streams.info(stream)).state.messages >= RETAINED + 10 && allExpected(paths(), [w]),
        {
          timeoutMs: 45_000,
          intervalMs: 200,
          seen: () => ({ pending: a.node.status().pending, n2: countOrigin(nodes.get(2)!.dbPath, 1) }),
        },
      );
      const retained = (await jsm.streams.info(stream)).state;
      assert.ok(
        retained.messages > 1000 && retained.first_seq === 1,
        `retained: ${JSON.stringify(retained)}`,
      );

      // Node 2 restarts with all of them retained: it resumes after its stored position.
      await stop(2);
      const b = await start(2);
      const resumedAt = b.node.status().shards[0]!.position;
      assert.ok(resumedAt >= RETAINED + 10, `node 2 resumes at its stored position ${resumedAt}`);
      // Node 3 comes back: it was down for all 3000.
      const c = await start(3);
      assert.equal(c.dbPath, pathC);

      // New writes keep flowing to the restarted node promptly.
      for (let round = 0; round < 5; round++) {
        const id = next++;
        w.write(id);
        const t0 = Date.now();
        await waitFor(`row ${id} on node 2`, () => countOrigin(b.dbPath, 1) === w.expected.size, {
          timeoutMs: 10_000,
        });
        assert.ok(
          Date.now() - t0 < 5000,
          `a new write took ${Date.now() - t0} ms to reach the restarted node`,
        );
      }
      await waitFor('node 3 to catch up completely', () => allExpected(paths(), [w]), {
        timeoutMs: 30_000,
        intervalMs: 200,
        seen: () => ({ diff: diffRows(c.dbPath, [w]).length, status: c.node.status() }),
      });
      const last = (await jsm.streams.info(stream)).state.last_seq;
      for (const n of nodes.values()) {
        await waitFor(
          `node ${n.config.node_id} at the stream's last message`,
          () => n.node.status().shards[0]!.position === last,
        );
        assertClean(n.dbPath);
      }
      passed = true;
    } finally {
      writer?.close();
      await Promise.allSettled([...nodes.values()].map((n) => n.close()));
      for (const [name, records] of logs) dumpLogs(name, records, !passed);
      await nc.close();
      await server.close();
    }
  });

  it('a node whose position the stream no longer holds says so (no silent gap) and still stops cleanly', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes: TestNode[] = [];
    let writer: RowWriter | undefined;
    let passed = false;
    const small = (writes: boolean) => (c: Config) => {
      configure(writes)(c);
      c.replication_log.max_entries = 100;
    };
    try {
      const a = await startNode({
        dir: dir.path,
        nodeId: 1,
        urls: [server.url],
        schema: ITEMS_SCHEMA,
        configure: small(true),
      });
      nodes.push(a);
      let b = await startNode({
        dir: dir.path,
        nodeId: 2,
        urls: [server.url],
        schema: ITEMS_SCHEMA,
        configure: small(false),
      });
      const w = (writer = new RowWriter(a.dbPath, 1));
      let next = 1_000_001;
      w.write(next++);
      await waitFor('the first row on node 2', () => countOrigin(b.dbPath, 1) === 1);
      await b.close();
      // 300 messages while node 2 is down; the stream keeps the last 100.
      for (let i = 0; i < 300; i++) w.write(next++);
      await waitFor(
        'node 1 to publish them',
        () => a.node.status().pending === 0 && countOrigin(a.dbPath, 1) === 301,
      );
      b = await startNode({ dir: dir.path, nodeId: 2, urls: [server.url], configure: small(false) });
      nodes.push(b);
      const node2 = b;
      await waitFor(
        'node 2 to report that it is behind the stream',
        () => node2.node.status().shards[0]!.state.type === 'behind',
      );
      assert.ok(b.logs.has('a snapshot restore is needed'));
      assert.equal(countOrigin(b.dbPath, 1), 1, 'nothing applied past the gap');
      const closed = await Promise.race([
        b.close().then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 15_000).unref()),
      ]);
      assert.ok(closed, 'node 2 stopped within 15 s');
      passed = true;
    } finally {
      writer?.close();
      await Promise.allSettled(nodes.map((n) => n.close()));
      for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      await server.close();
    }
  });
});
