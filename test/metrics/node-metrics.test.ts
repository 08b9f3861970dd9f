/**
 * Two nodes on a real nats-server, each serving /metrics on loopback: every
 * metric the node promises is exposed under the default namespace, and the values
 * move as they should under load: published and applied counters rise;
 * while node B's consumer is paused (its writer queue held, as a long write
 * would) its lag in messages and seconds rises with every message A
 * publishes, and falls back to zero once it resumes; the same while a shard
 * waits for a table B lacks, until B creates it; a message no node can
 * decode counts as a dead letter; latency histograms fill.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { subjectName } from '../../src/nats/naming.ts';
import { appConnection, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll } from '../replication/converge-helpers.ts';
import { httpGet, metricTypes, sampleValue } from './prometheus-text.ts';

/** Every metric the node promises, with its type, as a node with the default namespace exposes it. */
export const EXPECTED_METRICS: Readonly<Record<string, string>> = {
  // The seed's four.
  harmonylite_published: 'counter',
  harmonylite_pending_publish: 'gauge',
  harmonylite_count_changes: 'histogram',
  harmonylite_scan_changes: 'histogram',
  // Publish path.
  harmonylite_publish_latency_seconds: 'histogram',
  harmonylite_publish_batch_changes: 'histogram',
  harmonylite_publish_retries_total: 'counter',
  harmonylite_publish_failures_total: 'counter',
  // Replay path.
  harmonylite_changes_applied_total: 'counter',
  harmonylite_apply_batch_messages: 'histogram',
  harmonylite_apply_latency_seconds: 'histogram',
  harmonylite_replication_lag_messages: 'gauge',
  harmonylite_replication_lag_seconds: 'gauge',
  harmonylite_applied_position: 'gauge',
  harmonylite_dead_letters_total: 'counter',
  harmonylite_shard_waiting_for_schema: 'gauge',
  // NATS.
  harmonylite_nats_connected: 'gauge',
  harmonylite_nats_reconnects_total: 'counter',
  // Snapshots.
  harmonylite_snapshot_age_seconds: 'gauge',
  harmonylite_snapshot_duration_seconds: 'histogram',
  harmonylite_snapshot_size_bytes: 'gauge',
  harmonylite_snapshot_failures_total: 'counter',
  harmonylite_snapshot_restore_waiting: 'gauge',
  // Database and workers.
  harmonylite_writer_queue_wait_seconds: 'histogram',
  harmonylite_sqlite_busy_total: 'counter',
  harmonylite_worker_pool_utilization: 'gauge',
  harmonylite_wal_bytes: 'gauge',
  harmonylite_wal_checkpoints_total: 'counter',
  // Process.
  harmonylite_process_resident_memory_bytes: 'gauge',
  harmonylite_nodejs_eventloop_lag_seconds: 'gauge',
  harmonylite_nodejs_heap_size_used_bytes: 'gauge',
};

const dir = tempDir('hl-node-metrics-');
let nats: TestNatsServer | undefined;
let a: TestNode;
let b: TestNode;

before(async () => {
  nats = await startNatsServer();
  const configure = (c: TestNode['config']) => {
    c.prometheus.enable = true;
    c.prometheus.bind = '127.0.0.1:0';
  };
  a = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [nats.url],
    schema: `CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);
             CREATE TABLE extra (id INTEGER PRIMARY KEY);`,
    configure,
  });
  b = await startNode({
    dir: dir.path,
    nodeId: 2,
    urls: [nats.url],
    schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v INTEGER NOT NULL);',
    configure,
  });
});

after(async () => {
  await closeAll([a, b], () => nats?.close(), dir.remove);
});

function scrape(node: TestNode): Promise<string> {
  const url = node.node.observability?.metricsServer?.url;
  assert.ok(url, 'the node serves /metrics');
  return httpGet(url).then((r) => {
    assert.equal(r.status, 200);
    return r.body;
  });
}

/** Polls node's /metrics until `check` holds on the value of `name` (labels summed); returns that value. */
async function waitForMetric(
  node: TestNode,
  name: string,
  check: (v: number) => boolean,
  labels: Record<string, string> = {},
  what = 'to hold',
): Promise<number> {
  let last: number | undefined;
  await waitFor(
    `${name}${JSON.stringify(labels)} on node ${node.config.node_id} ${what}`,
    async () => {
      last = sampleValue(await scrape(node), name, labels);
      return last !== undefined && check(last);
    },
    { timeoutMs: 20_000, intervalMs: 100, seen: () => last },
  );
  return last!;
}

test('the endpoint binds to loopback and declares every metric the node promises', async () => {
  assert.equal(a.node.observability?.metricsServer?.address?.address, '127.0.0.1');
  const text = await scrape(a);
  const types = metricTypes(text);
  const missing = Object.entries(EXPECTED_METRICS).filter(([n, t]) => types.get(n) !== t);
  assert.deepEqual(missing, [], 'metrics missing or of the wrong type');
  assert.equal(sampleValue(text, 'harmonylite_nats_connected'), 1);
  assert.ok(sampleValue(text, 'harmonylite_process_resident_memory_bytes')! > 0);
});

test('under load: published and applied rise; a paused consumer lags, then catches up to zero', async () => {
  let published = sampleValue(await scrape(a), 'harmonylite_published') ?? 0;
  const appliedBefore = sampleValue(await scrape(b), 'harmonylite_changes_applied_total') ?? 0;
  const app = appConnection(a.dbPath);
  const insert = app.prepare('INSERT INTO items (v) VALUES (?)');
  const batch = app.transaction((n: number) => {
    for (let i = 0; i < 60; i++) insert.run(n * 60 + i);
  });
  // Pause B's consumer: its applies wait behind a write job that does not end until released.
  let release!: () => void;
  const held = b.node.writer.run(() => new Promise<void>((r) => (release = r)));
  let lag = 0;
  let lagSeconds = 0;
  try {
    for (let n = 0; n < 5; n++) {
      batch(n);
      const target = published + 60;
      published = await waitForMetric(
        a,
        'harmonylite_published',
        (v) => v >= target,
        {},
        `to reach ${target}`,
      );
      const lagBefore = lag;
      lag = await waitForMetric(
        b,
        'harmonylite_replication_lag_messages',
        (v) => v > lagBefore,
        { shard: '1' },
        'to rise',
      );
      const secondsBefore = lagSeconds;
      lagSeconds = await waitForMetric(
        b,
        'harmonylite_replication_lag_seconds',
        (v) => v > secondsBefore,
        { shard: '1' },
        'to rise',
      );
    }
  } finally {
    app.close();
    release();
    await held;
  }
  assert.ok(lag >= 5, `lag ${lag} after 5 published messages`);

  const pubText = await scrape(a);
  assert.ok(sampleValue(pubText, 'harmonylite_publish_latency_seconds_count')! >= 5);
  assert.ok(sampleValue(pubText, 'harmonylite_publish_batch_changes_sum')! >= 300);
  assert.ok(sampleValue(pubText, 'harmonylite_scan_changes_count')! > 0);
  assert.ok(sampleValue(pubText, 'harmonylite_count_changes_count')! > 0);
  await waitForMetric(a, 'harmonylite_pending_publish', (v) => v === 0, {}, 'to drain to 0');

  await waitForMetric(
    b,
    'harmonylite_replication_lag_messages',
    (v) => v === 0,
    { shard: '1' },
    'to fall to 0',
  );
  await waitForMetric(
    b,
    'harmonylite_replication_lag_seconds',
    (v) => v === 0,
    { shard: '1' },
    'to fall to 0',
  );
  const text = await scrape(b);
  assert.ok(sampleValue(text, 'harmonylite_changes_applied_total')! >= appliedBefore + 300);
  assert.ok(sampleValue(text, 'harmonylite_apply_latency_seconds_count')! > 0);
  assert.ok(sampleValue(text, 'harmonylite_apply_batch_messages_sum')! >= 5);
  assert.ok(sampleValue(text, 'harmonylite_applied_position', { shard: '1' })! >= lag);
  assert.ok(sampleValue(text, 'harmonylite_worker_pool_utilization')! > 0);
  // The apply that waited behind the held job recorded its wait.
  assert.ok(sampleValue(text, 'harmonylite_writer_queue_wait_seconds_sum')! >= 0.1);
  assert.equal(sampleValue(text, 'harmonylite_shard_waiting_for_schema', { shard: '1' }), 0);
});

test("a shard held by this node's schema lags, and catches up to zero once the table exists", async () => {
  const app = appConnection(a.dbPath);
  try {
    app.prepare('INSERT INTO extra (id) VALUES (1)').run();
  } finally {
    app.close();
  }
  await waitForMetric(b, 'harmonylite_shard_waiting_for_schema', (v) => v === 1, { shard: '1' }, 'to be 1');
  await waitForMetric(b, 'harmonylite_replication_lag_messages', (v) => v >= 1, { shard: '1' }, 'to rise');
  const appB = appConnection(b.dbPath);
  try {
    appB.exec('CREATE TABLE extra (id INTEGER PRIMARY KEY)');
  } finally {
    appB.close();
  }
  await waitForMetric(b, 'harmonylite_shard_waiting_for_schema', (v) => v === 0, { shard: '1' }, 'to be 0');
  await waitForMetric(
    b,
    'harmonylite_replication_lag_messages',
    (v) => v === 0,
    { shard: '1' },
    'to fall to 0',
  );
});

test('a message that can never apply counts as a dead letter', async () => {
  const before = sampleValue(await scrape(b), 'harmonylite_dead_letters_total') ?? 0;
  // Bytes no node can decode, published to shard 1 as a broken or hostile client would.
  const nc = await connect({ servers: nats!.url });
  try {
    await jetstream(nc).publish(
      subjectName(b.config.nats.subject_prefix, 1),
      new Uint8Array([0xff, 0x00, 0x13]),
    );
  } finally {
    await nc.close();
  }
  await waitForMetric(b, 'harmonylite_dead_letters_total', (v) => v === before + 1, { shard: '1' });
  await waitForMetric(b, 'harmonylite_replication_lag_messages', (v) => v === 0, { shard: '1' });
});
