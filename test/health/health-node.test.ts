/**
 * The health endpoint of running nodes on real nats-servers: 200 with the
 * detailed report while all is well (bound to loopback); 503 naming NATS when
 * the server dies, 200 again once it is back; 503 "degraded" with the reason
 * while a shard waits for this node's schema, 200 once the schema caught up.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { HealthReport } from '../../src/health/health-check.ts';
import { appConnection, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { httpGet } from '../metrics/prometheus-text.ts';
import { closeAll } from '../replication/converge-helpers.ts';

const dir = tempDir('hl-health-node-');
let nats: TestNatsServer | undefined;
/** A server of its own for the outage, so the other nodes never see it. */
let outageNats: TestNatsServer | undefined;
let a: TestNode;
let b: TestNode;
let c: TestNode;

const configure = (config: TestNode['config']) => {
  config.health_check.enable = true;
  config.health_check.bind = '127.0.0.1:0';
  config.nats.reconnect_wait_seconds = 0.2;
};

before(async () => {
  [nats, outageNats] = await Promise.all([startNatsServer(), startNatsServer()]);
  // C only publishes: the outage test is about this node's health, not about replay across a restart.
  c = await startNode({
    dir: dir.path,
    nodeId: 3,
    urls: [outageNats.url],
    schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)',
    configure: (config) => {
      configure(config);
      config.replicate = false;
    },
  });
  a = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [nats.url],
    schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)',
    configure,
  });
  // B lacks "items": what A writes there holds B's shard until B's schema catches up.
  b = await startNode({
    dir: dir.path,
    nodeId: 2,
    urls: [nats.url],
    schema: 'CREATE TABLE notes (id INTEGER PRIMARY KEY)',
    configure,
  });
});

after(async () => {
  await closeAll(
    [a, b, c],
    () => nats?.close(),
    () => outageNats?.close(),
    dir.remove,
  );
});

async function health(node: TestNode): Promise<{ status: number; report: HealthReport }> {
  const url = node.node.observability?.healthServer?.url;
  assert.ok(url, 'the node serves its health check');
  const res = await httpGet(url);
  return { status: res.status, report: JSON.parse(res.body) as HealthReport };
}

async function waitForHealth(node: TestNode, code: number, what: string): Promise<HealthReport> {
  let last: { status: number; report: HealthReport } | undefined;
  await waitFor(
    `node ${node.config.node_id} health ${code} (${what})`,
    async () => {
      last = await health(node);
      return last.status === code;
    },
    { timeoutMs: 20_000, intervalMs: 100, seen: () => last },
  );
  return last!.report;
}

test('200 with the detailed report when all is well, on loopback', async () => {
  assert.equal(a.node.observability?.healthServer?.address?.address, '127.0.0.1');
  assert.match(a.node.observability?.healthServer?.url ?? '', /^http:\/\/127\.0\.0\.1:\d+\/health$/);
  const app = appConnection(a.dbPath);
  try {
    app.prepare("INSERT INTO items (id, v) VALUES (1, 'x')").run();
  } finally {
    app.close();
  }
  const report = await waitForHealth(a, 200, 'ok after a write');
  assert.equal(report.status, 'ok');
  assert.deepEqual(report.failed, []);
  assert.equal(report.node_id, 1);
  assert.match(report.version, /^\d+\.\d+\.\d+/);
  assert.ok(report.uptime_seconds >= 0);
  assert.equal(report.nats_connected, true);
  assert.deepEqual(report.tables, ['items']);
  assert.equal(typeof report.pending_changes, 'number');
  await waitFor('a publish time and a caught-up shard in the report', async () => {
    const r = (await health(a)).report;
    return r.last_publish_at !== null && r.shards[0]?.lag_messages === 0 && r.shards[0].stream_last_seq! >= 1;
  });
  const r = (await health(a)).report;
  assert.equal(r.shards[0]?.state, 'running');
  assert.ok(r.shards[0]!.position >= 1);
});

test('503 naming NATS while the server is down, 200 once it is back', async () => {
  await waitForHealth(c, 200, 'ok before');
  outageNats!.kill('SIGKILL');
  const down = await waitForHealth(c, 503, 'NATS down');
  assert.equal(down.status, 'unhealthy');
  assert.equal(down.nats_connected, false);
  assert.ok(
    down.failed.some((f) => f.check === 'nats'),
    JSON.stringify(down.failed),
  );
  await outageNats!.restart();
  const up = await waitForHealth(c, 200, 'NATS back');
  assert.equal(up.nats_connected, true);
  assert.deepEqual(up.shards, [], 'a node that does not replicate has no shards');
});

test("503 degraded, with the reason, while a shard waits for this node's schema; 200 once it caught up", async () => {
  const app = appConnection(a.dbPath);
  try {
    app.prepare("INSERT INTO items (id, v) VALUES (2, 'y')").run();
  } finally {
    app.close();
  }
  const report = await waitForHealth(b, 503, 'a shard waiting for the schema');
  assert.equal(report.status, 'degraded');
  assert.equal(report.failed.length, 1, JSON.stringify(report.failed));
  assert.equal(report.failed[0]?.check, 'replication');
  assert.match(report.failed[0]!.reason, /shard 1 waits for this node's schema .*no such table "items"/);
  assert.equal(report.shards[0]?.state, 'waiting-for-schema');
  assert.match(report.shards[0]?.reason ?? '', /no such table "items"/);
  await waitFor(
    'the held message counted as lag',
    async () => ((await health(b)).report.shards[0]?.lag_messages ?? 0) >= 1,
  );
  // A's health is not affected.
  assert.equal((await health(a)).status, 200);

  const appB = appConnection(b.dbPath);
  try {
    appB.exec('CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT)');
  } finally {
    appB.close();
  }
  await waitForHealth(b, 200, 'the schema caught up');
  await waitFor(
    'B caught up in its report',
    async () => (await health(b)).report.shards[0]?.lag_messages === 0,
  );
  const caughtUp = (await health(b)).report;
  assert.equal(caughtUp.shards[0]?.state, 'running');
  assert.deepEqual(caughtUp.tables, ['items', 'notes']);
});
