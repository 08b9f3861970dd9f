/**
 * `harmonylite -config f -status` as an operator runs it, next to a running
 * three-node cluster (in-process nodes, shards 2, one real nats-server): it
 * prints this node's state from its database and every node's position and
 * lag from NATS; without [nats] urls it says how to see the cluster; with NATS
 * unreachable it still prints the local state, and exits 1.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import Database from 'better-sqlite3';
import { join } from 'node:path';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { statusBucket } from '../../src/nats/naming.ts';
import { parseNodeStatusRecord } from '../../src/node/node-status-reporter.ts';
import {
  appConnection,
  spawnCli,
  startNode,
  waitConverged,
  writeConfigFile,
  type TestNode,
} from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { freePort } from '../helpers/protocol-servers.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll } from '../replication/converge-helpers.ts';

const SCHEMA =
  'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE TABLE tags (name TEXT PRIMARY KEY)';
const dir = tempDir('hl-status-');
let nats: TestNatsServer | undefined;
const nodes: TestNode[] = [];

before(async () => {
  nats = await startNatsServer();
  // In parallel: each start waits mostly on its shard workers and JetStream.
  const started = await Promise.allSettled(
    [1, 2, 3].map((nodeId) =>
      startNode({
        dir: dir.path,
        nodeId,
        urls: [nats!.url],
        schema: SCHEMA,
        configure: (c) => {
          c.replication_log.shards = 2;
        },
      }),
    ),
  );
  for (const r of started) if (r.status === 'fulfilled') nodes.push(r.value);
  const failed = started.find((r) => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
});

after(async () => {
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

/** Runs `-status` with node `n`'s config (optionally changed) and returns exit code and output. */
async function runStatus(n: TestNode, change?: (c: TestNode['config']) => void) {
  const config = structuredClone(n.config);
  change?.(config);
  const path = writeConfigFile(config, join(dir.path, `status-${n.config.node_id}.toml`));
  const cli = spawnCli(['-config', path, '-status']);
  const code = await cli.exited;
  return { code, output: cli.output.join('\n') };
}

test('lists every node of a three-node cluster with its position and lag per shard', async () => {
  for (const [i, n] of nodes.entries()) {
    const app = appConnection(n.dbPath);
    try {
      for (let k = 0; k < 10; k++)
        app.prepare('INSERT INTO notes (id, body) VALUES (?, ?)').run(i * 100 + k, `n${i}`);
      app.prepare('INSERT INTO tags (name) VALUES (?)').run(`tag${i}`);
    } finally {
      app.close();
    }
  }
  await waitConverged(
    nodes.map((n) => n.dbPath),
    ['notes', 'tags'],
  );
  // Every node has reported since it caught up (each reports at start, then every 5 s).
  const convergedAt = Date.now();
  const nc = await connect({ servers: nats!.url });
  try {
    const kv = await new Kvm(nc).open(statusBucket(nodes[0]!.config.nats.stream_prefix));
    let seen: unknown[] = [];
    await waitFor(
      'three nodes reporting in the status bucket since they caught up',
      async () => {
        const records = [];
        for await (const k of await kv.keys()) {
          const e = await kv.get(k);
          const r = e === null ? undefined : parseNodeStatusRecord(e.value);
          if (r !== undefined) records.push(r);
        }
        seen = records;
        return (
          records.length === 3 &&
          records.every((r) => r.updated_at >= convergedAt && r.shards.every((s) => s.state === 'running'))
        );
      },
      { timeoutMs: 15_000, intervalMs: 250, seen: () => seen },
    );
  } finally {
    await nc.close();
  }

  // A losing version in the conflict log (as a concurrent write that lost would leave).
  const app = new Database(nodes[0]!.dbPath);
  app
    .prepare(
      `INSERT INTO __harmonylite___conflicts (at, tbl, pk, reason, lost_version, lost_origin, lost_type, won_version, won_origin) VALUES (?, 'notes', x'00', 'superseded', 1, 2, 'update', 2, 1)`,
    )
    .run(Date.now());
  app.close();
  const { code, output } = await runStatus(nodes[0]!);
  assert.equal(code, 0, output);
  assert.match(
    output,
    /^ {2}conflicts in the last hour: 1 \(losing versions, in __harmonylite___conflicts\)$/m,
  );
  assert.match(output, /^Node 1 \(this node\) {2}.*node-1\.db$/m);
  assert.match(output, /^ {2}tables watched: 2 \(notes, tags\)$/m);
  assert.match(output, /^ {2}pending changes: 0$/m);
  assert.match(output, /^ {2}dead letters: 0$/m);
  // The local table: both shards, caught up (LAG 0).
  for (const shard of [1, 2])
    assert.match(
      output,
      new RegExp(`^ {2}${shard} +harmonylite-changes-${shard} +(\\d+) +\\1 +0 +0 +\\S+ ago$`, 'm'),
    );
  assert.match(output, /^Cluster: 3 nodes reporting \(bucket harmonylite-changes-node-status\)$/m);
  // Each node reports its own count (node 1's report may predate the row above).
  assert.match(output, /^ {2}conflicts in the last hour: node 1: [01], node 2: 0, node 3: 0$/m);
  assert.match(output, /^ {2}NODE +SHARD +POSITION +LAG +STATE +PENDING +LAST PUBLISH +REPORTED$/m);
  for (const node of ['1 \\*', '2', '3']) {
    for (const shard of [1, 2]) {
      assert.match(
        output,
        new RegExp(`^ {2}${node} +${shard} +\\d+ +0 +running +0 +`, 'm'),
        `node ${node} shard ${shard}`,
      );
    }
  }
});

test('without [nats] urls, or with NATS unreachable, it still prints the local state', async () => {
  const port = await freePort();
  // Both at once: each is a CLI start.
  const [noUrls, unreachable] = await Promise.all([
    runStatus(nodes[1]!, (c) => {
      c.nats.urls = [];
    }),
    runStatus(nodes[2]!, (c) => {
      c.nats.urls = [`nats://127.0.0.1:${port}`];
    }),
  ]);
  assert.equal(noUrls.code, 0, noUrls.output);
  assert.match(noUrls.output, /^Node 2 \(this node\)/m);
  assert.match(noUrls.output, /^Cluster: not shown: \[nats\] urls is empty/m);
  assert.match(noUrls.output, /^ {2}1 +harmonylite-changes-1 +\? +\d+ +\? +0 /m);

  assert.equal(unreachable.code, 1, unreachable.output);
  assert.match(unreachable.output, /^Node 3 \(this node\)/m);
  assert.match(unreachable.output, /^Cluster: NATS could not be read: cannot reach NATS/m);
});
