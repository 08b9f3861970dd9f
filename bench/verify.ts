/**
 * Verify and wait-for-write, measured on a real local cluster (CLI nodes, one nats-server):
 * - wait: node 1 commits 1 row per transaction at --rate rows/s for --seconds; every 10th
 *   commit asks node 1's `GET /replicated?after=<id>&nodes=all`; reported: commit to
 *   "replicated on all nodes" answered (p50/p90/p99/max);
 * - verify: --rows rows in every node's database before the first start (the index is built
 *   over them), then `-verify` while all agree, and again after --broken rows were changed
 *   behind capture on one node: time and bytes exchanged.
 *
 *   HL_BENCH_SOURCE=1 npx tsx bench/verify.ts [--part wait|verify|both] [--rows 1000000] [--nodes 3]
 */
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { triggerName } from '../src/cdc/names.ts';
import { BenchCluster } from './bench-cluster.ts';
import { percentile } from './workloads.ts';
import { ClusterVerify } from '../src/verify/cluster-verify.ts';

const { values } = parseArgs({
  options: {
    part: { type: 'string', default: 'both' },
    rows: { type: 'string', default: '1000000' },
    nodes: { type: 'string', default: '3' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '20' },
    broken: { type: 'string', default: '10' },
  },
});
const NODES = Number(values.nodes);
const HEALTH_PORT = 18_790;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitPart(): Promise<void> {
  const cluster = await BenchCluster.start({
    nodes: NODES,
    shards: 2,
    replicas: 1,
    schema: 'CREATE TABLE probes (id INTEGER PRIMARY KEY, sent_at REAL NOT NULL);',
    configure: (c) => {
      c.health_check.enable = true;
      c.health_check.bind = `127.0.0.1:${HEALTH_PORT + c.node_id}`;
    },
  });
  try {
    await sleep(2000);
    const writer = new Database(cluster.nodes[0]!.dbPath, { timeout: 10_000 });
    const insert = writer.prepare('INSERT INTO probes (sent_at) VALUES (?)');
    const lastId = writer
      .prepare("SELECT seq FROM sqlite_sequence WHERE name = '__harmonylite___global_change_log'")
      .pluck();
    const rate = Number(values.rate);
    const total = rate * Number(values.seconds);
    const latencies: number[] = [];
    const waits: Promise<void>[] = [];
    let failed = 0;
    const start = performance.now();
    for (let sent = 0; sent < total;) {
      while (sent < total && performance.now() - start >= (sent * 1000) / rate) {
        const t = performance.now();
        insert.run(t);
        sent++;
        if (sent % 10 !== 0) continue;
        const id = Number(lastId.get());
        waits.push(
          fetch(`http://127.0.0.1:${HEALTH_PORT + 1}/replicated?after=${id}&nodes=all&timeout=10s`).then(
            async (r) => {
              await r.arrayBuffer();
              if (r.status === 200) latencies.push(performance.now() - t);
              else failed++;
            },
          ),
        );
      }
      await sleep(1);
    }
    await Promise.all(waits);
    writer.close();
    latencies.sort((a, b) => a - b);
    console.log(
      JSON.stringify({
        part: 'wait',
        nodes: NODES,
        rowsPerSecond: rate,
        samples: latencies.length,
        failed,
        p50Ms: percentile(latencies, 50),
        p90Ms: percentile(latencies, 90),
        p99Ms: percentile(latencies, 99),
        maxMs: latencies[latencies.length - 1],
      }),
    );
  } finally {
    await cluster.stop();
  }
}

async function verifyPart(): Promise<void> {
  const rows = Number(values.rows);
  const cluster = await BenchCluster.start({
    nodes: NODES,
    shards: 2,
    replicas: 1,
    schema:
      'CREATE TABLE items (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL);' +
      `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${rows}) ` +
      "INSERT INTO items SELECT x, 1, x, printf('%.100c', 'x') FROM c;",
  });
  const nc = await connect({ servers: cluster.urls });
  try {
    const verify = new ClusterVerify(nc, await jetstreamManager(nc), {
      streamPrefix: 'harmonylite-changes',
      shards: 2,
      settleMs: 1000,
      requestTimeoutMs: 900_000,
    });
    const nodes = (await verify.discover()).map((h) => h.nodeId);
    const agree = await verify.verify(nodes);
    console.log(
      JSON.stringify({
        part: 'verify',
        case: 'all agree',
        nodes: nodes.length,
        rows: agree.rows,
        seconds: agree.ms / 1000,
        bytes: agree.bytes,
        rounds: agree.rounds,
      }),
    );
    // Rows changed behind capture on the last node: the update trigger dropped and put back.
    const db = new Database(cluster.nodes[NODES - 1]!.dbPath, { timeout: 10_000 });
    const name = triggerName('items', 'update');
    const sql = db.prepare('SELECT sql FROM sqlite_schema WHERE name = ?').pluck().get(name) as string;
    const broken = Number(values.broken);
    db.transaction(() => {
      db.exec(`DROP TRIGGER "${name}"`);
      for (let i = 0; i < broken; i++)
        db.prepare("UPDATE items SET payload = 'broken' WHERE id = ?").run(
          1 + Math.floor((i * rows) / broken),
        );
      db.exec(sql);
    }).immediate();
    db.close();
    const differ = await verify.verify(nodes);
    console.log(
      JSON.stringify({
        part: 'verify',
        case: `${broken} rows differ on one node`,
        nodes: nodes.length,
        rows: differ.rows,
        diverged: differ.diverged,
        seconds: differ.ms / 1000,
        bytes: differ.bytes,
        rounds: differ.rounds,
      }),
    );
  } finally {
    await nc.close();
    await cluster.stop();
  }
}

if (values.part === 'wait' || values.part === 'both') await waitPart();
if (values.part === 'verify' || values.part === 'both') await verifyPart();
