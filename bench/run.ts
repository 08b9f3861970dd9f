/**
 * `npm run bench`: benchmarks shard counts on a real local cluster (nats-server +
 * HarmonyLite nodes as processes) and measures the machine's limits in the same
 * run, so every figure is also a ratio of its limit. Prints a table, writes JSON
 * and an SVG chart to bench/results/.
 *
 *   npm run bench -- [--shards 1,2,4,8] [--rows 200000] [--rows-per-txn 100] [--row-bytes 100]
 *                    [--writers 1] [--nodes 2] [--r3-shards 1,4] [--latency-rate 1000]
 *                    [--latency-seconds 10] [--catchup-rows 200000] [--snapshot-mb 450]
 *                    [--snapshot-backends local,nats,s3,webdav,sftp] [--short] [--out bench/results]
 *
 * `--short` is the CI smoke run: small sizes, no R3, no thresholds, snapshots
 * on the local store only.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { BenchCluster, ROOT } from './bench-cluster.ts';
import { renderChart, type ChartPoint } from './chart.ts';
import { captureOverhead, plainApplyRate, rawPublishRate } from './machine-limits.ts';
import {
  SNAPSHOT_BACKENDS,
  snapshotBench,
  snapshotBenchLines,
  type SnapshotBackendName,
} from './snapshot.ts';
import {
  BENCH_SCHEMA,
  commitToVisibleLatency,
  replicatedThroughput,
  waitForRows,
  type LatencyResult,
} from './workloads.ts';

const { values } = parseArgs({
  options: {
    shards: { type: 'string' },
    rows: { type: 'string' },
    'rows-per-txn': { type: 'string', default: '100' },
    'row-bytes': { type: 'string', default: '100' },
    writers: { type: 'string', default: '1' },
    nodes: { type: 'string', default: '2' },
    'r3-shards': { type: 'string' },
    'latency-rate': { type: 'string', default: '1000' },
    'latency-seconds': { type: 'string' },
    'catchup-rows': { type: 'string' },
    'snapshot-mb': { type: 'string' },
    'snapshot-backends': { type: 'string' },
    short: { type: 'boolean', default: false },
    out: { type: 'string', default: join(ROOT, 'bench', 'results') },
  },
});
const short = values.short;
const opts = {
  shards: (values.shards ?? (short ? '1,2' : '1,2,4,8')).split(',').map(Number),
  rows: Number(values.rows ?? (short ? 5000 : 200_000)),
  rowsPerTxn: Number(values['rows-per-txn']),
  rowBytes: Number(values['row-bytes']),
  writers: Number(values.writers),
  nodes: Number(values.nodes),
  // R3 at the default shard count and at 4 (more shards cost CPU on 2 cores; '' or 0: no R3 run).
  r3Shards: short
    ? []
    : (values['r3-shards'] ?? '1,4')
        .split(',')
        .map(Number)
        .filter((n) => n > 0),
  latencyRate: Number(values['latency-rate']),
  latencySeconds: Number(values['latency-seconds'] ?? (short ? 1 : 10)),
  catchupRows: Number(values['catchup-rows'] ?? (short ? 5000 : 200_000)),
  // 0.4-1 GB is the size the snapshot targets are set for.
  snapshotMb: Number(values['snapshot-mb'] ?? (short ? 20 : 450)),
  snapshotBackends: (values['snapshot-backends'] ?? (short ? 'local' : SNAPSHOT_BACKENDS.join(',')))
    .split(',')
    .filter((b) => b !== '') as SnapshotBackendName[],
  snapshotRuns: short ? 1 : 3,
};

const phases = opts.shards.length * 2 + opts.r3Shards.length + 3;
let phase = 0;
function step(what: string): void {
  phase++;
  process.stderr.write(`[${phase}/${phases}] ${what}\n`);
}
function progress(total: number): (done: number) => void {
  let last = -1;
  return (done) => {
    const pct = Math.floor((100 * done) / total);
    if (pct !== last && pct % 10 === 0) process.stderr.write(`  ${pct}%\r`);
    last = pct;
  };
}

interface ShardResult {
  shards: number;
  rowsPerSecond: number;
  latency: LatencyResult;
  peakRssMb: number[];
  cpuSeconds: number[];
}

step('machine limits: plain insert/apply, capture overhead, raw JetStream publish');
const capture1 = captureOverhead({
  rows: short ? 2000 : 20_000,
  rowsPerTxn: 1,
  rowBytes: opts.rowBytes,
  runs: short ? 1 : 3,
});
const capture100 = captureOverhead({
  rows: short ? 20_000 : 200_000,
  rowsPerTxn: 100,
  rowBytes: opts.rowBytes,
  runs: short ? 1 : 3,
});
const applyLimit = plainApplyRate({ rows: short ? 20_000 : 200_000, rowBytes: opts.rowBytes });
const publishLimit = await rawPublishRate({ messages: short ? 5000 : 50_000, bytes: 100, inFlight: 256 });

const results: ShardResult[] = [];
for (const shards of opts.shards) {
  const cluster = await BenchCluster.start({ nodes: opts.nodes, shards, replicas: 1, schema: BENCH_SCHEMA });
  try {
    step(
      `shards=${shards}: replicated throughput, ${opts.rows} rows, ${opts.rowsPerTxn}/txn, ${opts.writers} writer(s)`,
    );
    const t = await replicatedThroughput(cluster, {
      rows: opts.rows,
      rowsPerTxn: opts.rowsPerTxn,
      rowBytes: opts.rowBytes,
      writers: opts.writers,
      onProgress: progress(opts.rows),
    });
    step(
      `shards=${shards}: commit-to-visible latency at ${opts.latencyRate} rows/s for ${opts.latencySeconds} s`,
    );
    const latency = await commitToVisibleLatency(cluster, {
      rowsPerSecond: opts.latencyRate,
      seconds: opts.latencySeconds,
    });
    results.push({
      shards,
      rowsPerSecond: t.rowsPerSecond,
      latency,
      peakRssMb: cluster.nodes.map((n) => Math.round(n.peakRssBytes / 1e6)),
      cpuSeconds: cluster.nodes.map((n) => Math.round(n.cpuSeconds * 10) / 10),
    });
  } finally {
    await cluster.stop();
  }
}

const r3: { shards: number; rowsPerSecond: number }[] = [];
for (const shards of opts.r3Shards) {
  step(`R3 on a 3-server cluster, 3 nodes, shards=${shards}: replicated throughput`);
  const cluster = await BenchCluster.start({
    nodes: 3,
    shards,
    replicas: 3,
    schema: BENCH_SCHEMA,
  });
  try {
    const t = await replicatedThroughput(cluster, {
      rows: opts.rows,
      rowsPerTxn: opts.rowsPerTxn,
      rowBytes: opts.rowBytes,
      writers: 1,
      onProgress: progress(opts.rows),
    });
    r3.push({ shards, rowsPerSecond: t.rowsPerSecond });
  } finally {
    await cluster.stop();
  }
}

step(`catch-up of a stopped node: ${opts.catchupRows} rows written while it was down`);
const best = results.reduce((a, b) => (b.rowsPerSecond > a.rowsPerSecond ? b : a));
const catchupShards = best.shards;
const options = { nodes: 2, shards: catchupShards, replicas: 1 as const, schema: BENCH_SCHEMA };
const cluster = await BenchCluster.start(options);
let catchupRowsPerSecond = 0;
try {
  const stopped = cluster.nodes.pop()!;
  await stopped.stop();
  const writer = new Database(cluster.nodes[0]!.dbPath, { timeout: 10_000 });
  const insert = writer.prepare('INSERT INTO items (writer, seq, payload) VALUES (1, ?, ?)');
  const body = 'x'.repeat(opts.rowBytes);
  const tx = writer.transaction((from: number) => {
    for (let i = from; i < from + 1000; i++) insert.run(i, body);
  });
  for (let from = 0; from < opts.catchupRows; from += 1000) tx(from);
  const pending = writer.prepare('SELECT count(*) FROM "__harmonylite___global_change_log"').pluck();
  while ((pending.get() as number) > 0) await new Promise((r) => setTimeout(r, 50));
  const lastId = writer.prepare('SELECT max(id) FROM items').pluck().get() as number;
  writer.close();
  const restarted = await cluster.startNode(stopped.id, options);
  const reader = new Database(restarted.dbPath, { readonly: true });
  const count = reader.prepare('SELECT count(*) FROM items').pluck();
  const t0 = performance.now();
  const atStart = count.get() as number;
  await waitForRows([reader], opts.catchupRows, { lastId });
  catchupRowsPerSecond = (opts.catchupRows - atStart) / ((performance.now() - t0) / 1000);
  reader.close();
} finally {
  await cluster.stop();
}

step(
  `snapshots: save and restore of a ${opts.snapshotMb} MB database per store (${opts.snapshotBackends.join(', ')}) with baselines`,
);
const snapshots = await snapshotBench({
  sizeMb: opts.snapshotMb,
  runs: opts.snapshotRuns,
  backends: opts.snapshotBackends,
});

const ratio = (v: number, limit: number) => (v / limit).toFixed(2);
const lines = [
  `HarmonyLite benchmark ${new Date().toISOString()} (${short ? 'short' : 'full'} run)`,
  `rows ${opts.rows}, ${opts.rowsPerTxn} rows/txn, ${opts.rowBytes} B/row, ${opts.writers} writer(s), ${opts.nodes} nodes, R1`,
  '',
  '| shards | replicated rows/s | / apply limit | p50 ms | p90 ms | p99 ms | max ms | peak RSS MB per node | CPU s per node |',
  '|---|---|---|---|---|---|---|---|---|',
  ...results.map(
    (r) =>
      `| ${r.shards} | ${Math.round(r.rowsPerSecond)} | ${ratio(r.rowsPerSecond, applyLimit)} | ${r.latency.p50Ms.toFixed(2)} | ${r.latency.p90Ms.toFixed(2)} | ${r.latency.p99Ms.toFixed(2)} | ${r.latency.maxMs.toFixed(2)} | ${r.peakRssMb.join(' / ')} | ${r.cpuSeconds.join(' / ')} |`,
  ),
  '',
  '| measure | value | limit (same run) | ratio |',
  '|---|---|---|---|',
  `| capture, 1 row/txn (rows/s) | ${Math.round(capture1.captured)} | plain ${Math.round(capture1.plain)} | ${ratio(capture1.plain, capture1.captured)}x slower |`,
  `| capture, 100 rows/txn (rows/s) | ${Math.round(capture100.captured)} | plain ${Math.round(capture100.plain)} | ${ratio(capture100.plain, capture100.captured)}x slower |`,
  `| catch-up of a stopped node, shards=${catchupShards} (rows/s) | ${Math.round(catchupRowsPerSecond)} | plain apply ${Math.round(applyLimit)} | ${ratio(catchupRowsPerSecond, applyLimit)} |`,
  ...r3.map(
    (r) =>
      `| R3 replicated, 3 nodes, shards=${r.shards} (rows/s) | ${Math.round(r.rowsPerSecond)} | plain apply ${Math.round(applyLimit)} | ${ratio(r.rowsPerSecond, applyLimit)} |`,
  ),
  `| raw JetStream publish, 256 in flight, R1 (msgs/s) | ${Math.round(publishLimit)} | | |`,
  '',
  ...snapshotBenchLines(snapshots, opts.snapshotRuns),
];
process.stdout.write(lines.join('\n') + '\n');

const report = {
  at: new Date().toISOString(),
  mode: short ? 'short' : 'full',
  options: opts,
  limits: {
    plainApplyRowsPerSecond: applyLimit,
    rawPublishMsgsPerSecond: publishLimit,
    capture1,
    capture100,
  },
  shards: results,
  r3,
  catchup: { shards: catchupShards, rowsPerSecond: catchupRowsPerSecond },
  snapshots,
};
mkdirSync(values.out, { recursive: true });
const stem = short ? 'short' : 'full';
writeFileSync(join(values.out, `${stem}.json`), JSON.stringify(report, null, 2) + '\n');
const points: ChartPoint[] = results.map((r) => ({
  shards: r.shards,
  rowsPerSecond: r.rowsPerSecond,
  p99Ms: r.latency.p99Ms,
}));
writeFileSync(
  join(values.out, `${stem}.svg`),
  renderChart(`HarmonyLite: replicated rows/s and p99 latency per shard count (${stem} run)`, points),
);
process.stderr.write(`wrote ${join(values.out, `${stem}.json`)} and ${stem}.svg\n`);
