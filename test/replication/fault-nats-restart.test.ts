/**
 * NATS goes away during continuous writes on two nodes: the application is
 * never blocked, the publisher says "Unable to publish" with the reason, and
 * once NATS is back every node converges on exactly what was written
 * (invariants 1 and 3). First the single server is restarted (gracefully, then
 * killed -9 and restarted on the same port and store); then one server of a
 * 3-server JetStream cluster with R3 streams is killed -9 and restarted.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import type { Config } from '../../src/config/config.ts';
import { startNatsCluster, startNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  allExpected,
  assertClean,
  countOrigin,
  debug,
  dumpLogs,
  diffRows,
  ITEMS_SCHEMA,
  RowWriter,
  writeContinuously,
} from './fault-helpers.ts';

function configure(extra?: (c: Config) => void): (c: Config) => void {
  return (c) => {
    c.replication_log.shards = 2;
    c.replication_log.max_batch_changes = 50;
    // Retention is not under test here: an outage must not outlast the stream's limit.
    c.replication_log.max_entries = 100_000;
    c.nats.publish_timeout = 1000;
    c.nats.reconnect_wait_seconds = 0.25;
    c.snapshot.enabled = false;
    extra?.(c);
  };
}

/** How many rows written by `w` node `node` holds. */
function rowsOf(w: RowWriter, node: TestNode): number {
  return countOrigin(node.dbPath, w.origin);
}

async function converge(nodes: readonly TestNode[], writers: readonly RowWriter[], timeoutMs: number) {
  const paths = nodes.map((n) => n.dbPath);
  await waitFor('every node to hold exactly the rows written', () => allExpected(paths, writers), {
    timeoutMs,
    intervalMs: 200,
    seen: () => ({
      diffs: paths.map((p) => diffRows(p, writers).slice(0, 5)),
      status: nodes.map((n) => n.node.status()),
    }),
  });
  for (const p of paths) assertClean(p);
}

describe('NATS restarts during writes', () => {
  it('single server: restarted, then killed -9 and restarted; writes never block, nothing is lost', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes: TestNode[] = [];
    const writers: RowWriter[] = [];
    let load: ReturnType<typeof writeContinuously> | undefined;
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
      writers.push(new RowWriter(a.dbPath, 1), new RowWriter(b.dbPath, 2));
      const [wa, wb] = writers as [RowWriter, RowWriter];
      debug('load = writeContinuously(writers);');
      load = writeContinuously(writers);
      await waitFor('replication to flow both ways', () => rowsOf(wa, b) >= 50 && rowsOf(wb, a) >= 50, {
        timeoutMs: 30_000,
      });

      // A graceful restart in the middle of the stream.
      debug('await server.restart();');
      await server.restart();
      const afterRestart = wa.ops;
      await waitFor('writes to go on and replicate after the restart', () => {
        return wa.ops > afterRestart + 200 && rowsOf(wa, b) > 0 && rowsOf(wb, a) > 0;
      });

      // An outage: the server dies; the application keeps writing and is never blocked.
      debug("server.kill('SIGKILL');");
      server.kill('SIGKILL');
      const atKill = { a: wa.ops, b: wb.ops };
      await waitFor(
        '"Unable to publish" on both nodes and 500 more writes on each',
        () =>
          nodes.every((n) => n.logs.has('Unable to publish')) &&
          wa.ops > atKill.a + 500 &&
          wb.ops > atKill.b + 500,
        { timeoutMs: 20_000, seen: () => ({ a: wa.ops, b: wb.ops, err: load?.error }) },
      );
      const unable = a.logs.records.find((r) => r.msg === 'Unable to publish');
      assert.ok(
        typeof unable?.err === 'string' && unable.err !== '',
        `the log gives the reason: ${JSON.stringify(unable)}`,
      );
      assert.ok(
        nodes.every((n) => n.node.status().pending > 0),
        'changes stay pending during the outage',
      );
      assert.ok(load.maxTxnMs < 2000, `an application transaction waited ${load.maxTxnMs} ms`);

      debug('await server.restart();');
      await server.restart();
      const afterOutage = wa.ops;
      await waitFor('writes after the outage', () => wa.ops > afterOutage + 200);
      debug('await load.stop();');
      await load.stop();
      assert.equal(load.error, undefined);
      assert.ok(load.maxTxnMs < 2000, `an application transaction waited ${load.maxTxnMs} ms`);
      debug('await converge(');
      await converge(nodes, writers, 30_000);
      passed = true;
    } finally {
      await load?.stop();
      for (const w of writers) w.close();
      await Promise.allSettled(nodes.map((n) => n.close()));
      for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      await server.close();
    }
  });

  it('3-server cluster, R3 streams: the stream leader killed -9 and restarted during writes; nothing is lost', async () => {
    using dir = tempDir();
    const cluster = await startNatsCluster(3);
    const nodes: TestNode[] = [];
    const writers: RowWriter[] = [];
    let load: ReturnType<typeof writeContinuously> | undefined;
    let passed = false;
    try {
      const cfg = configure((c) => {
        c.replication_log.replicas = 3;
      });
      for (const id of [1, 2])
        nodes.push(
          await startNode({
            dir: dir.path,
            nodeId: id,
            urls: cluster.urls,
            schema: ITEMS_SCHEMA,
            configure: cfg,
          }),
        );
      const [a, b] = nodes as [TestNode, TestNode];
      writers.push(new RowWriter(a.dbPath, 1), new RowWriter(b.dbPath, 2));
      const [wa, wb] = writers as [RowWriter, RowWriter];
      debug('load = writeContinuously(writers);');
      load = writeContinuously(writers);
      await waitFor('replication to flow both ways', () => rowsOf(wa, b) >= 50 && rowsOf(wb, a) >= 50, {
        timeoutMs: 30_000,
      });

      // The most disruptive victim: the server leading shard 1's stream.
      const nc = await connect({ servers: cluster.urls });
      let leader: string | undefined;
      try {
        const jsm = await jetstreamManager(nc);
        const info = await jsm.streams.info(a.config.nats.stream_prefix + '-1');
        assert.equal(info.config.num_replicas, 3);
        leader = info.cluster?.leader;
      } finally {
        await nc.close();
      }
      const victim = cluster.servers.find((s) => s.name === leader) ?? cluster.servers[0]!;
      debug("victim.kill('SIGKILL');");
      victim.kill('SIGKILL');
      const atKill = { a: wa.ops, b: wb.ops, onB: rowsOf(wa, b), onA: rowsOf(wb, a) };
      // Two of three servers are a quorum: publishing and replaying go on without the third.
      await waitFor(
        'writes to go on and replicate both ways without the killed server',
        () =>
          wa.ops > atKill.a + 500 &&
          wb.ops > atKill.b + 500 &&
          rowsOf(wa, b) > atKill.onB + 50 &&
          rowsOf(wb, a) > atKill.onA + 50,
        { timeoutMs: 30_000, seen: () => nodes.map((n) => n.node.status()) },
      );
      debug('await victim.restart();');
      await victim.restart();
      const afterRestart = wa.ops;
      await waitFor('writes after the restart', () => wa.ops > afterRestart + 200);
      debug('await load.stop();');
      await load.stop();
      assert.equal(load.error, undefined);
      assert.ok(load.maxTxnMs < 2000, `an application transaction waited ${load.maxTxnMs} ms`);
      debug('await converge(');
      await converge(nodes, writers, 40_000);
      passed = true;
    } finally {
      await load?.stop();
      for (const w of writers) w.close();
      await Promise.allSettled(nodes.map((n) => n.close()));
      for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      await cluster.close();
    }
  });
});
