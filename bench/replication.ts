/**
 * End-to-end replication benchmark: one node writes N rows, 100 per
 * transaction, as fast as it can; the time until the second node holds them
 * all, for shard counts 1, 2, 4; commit-to-visible latency at a steady
 * 1,000 rows/s; and beside them, in the same run, this machine's single-node
 * limits for the same rows.
 *
 *   npm run build && npx tsx bench/replication.ts [--rows 100000] [--shards 1,2,4] [--latency-seconds 10]
 */
import { parseArgs } from 'node:util';
import { BenchCluster } from './bench-cluster.ts';
import { BENCH_SCHEMA, commitToVisibleLatency, replicatedThroughput, singleNodeLimits } from './workloads.ts';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '100000' },
    'rows-per-txn': { type: 'string', default: '100' },
    'row-bytes': { type: 'string', default: '100' },
    shards: { type: 'string', default: '1,2,4' },
    'latency-rate': { type: 'string', default: '1000' },
    'latency-seconds': { type: 'string', default: '10' },
  },
});
const rows = Number(values.rows);
const rowsPerTxn = Number(values['rows-per-txn']);
const rowBytes = Number(values['row-bytes']);
const shardCounts = values.shards.split(',').map(Number);

const limits = singleNodeLimits({ rows, rowsPerTxn, rowBytes });
console.log(
  `limits: plain insert ${Math.round(limits.insertRowsPerSecond)} rows/s, plain apply (upsert, 1000/txn) ${Math.round(limits.applyRowsPerSecond)} rows/s`,
);

console.log('\n| shards | rows | write s | replicated s | rows/s | / apply limit |');
console.log('|---|---|---|---|---|---|');
for (const shards of shardCounts) {
  const cluster = await BenchCluster.start({ nodes: 2, shards, replicas: 1, schema: BENCH_SCHEMA });
  try {
    const r = await replicatedThroughput(cluster, { rows, rowsPerTxn, rowBytes, writers: 1 });
    console.log(
      `| ${shards} | ${r.rows} | ${r.writeSeconds.toFixed(2)} | ${r.replicatedSeconds.toFixed(2)} | ${Math.round(r.rowsPerSecond)} | ${(r.rowsPerSecond / limits.applyRowsPerSecond).toFixed(2)} |`,
    );
  } finally {
    await cluster.stop();
  }
}

const cluster = await BenchCluster.start({ nodes: 2, shards: 1, replicas: 1, schema: BENCH_SCHEMA });
try {
  const l = await commitToVisibleLatency(cluster, {
    rowsPerSecond: Number(values['latency-rate']),
    seconds: Number(values['latency-seconds']),
  });
  console.log(
    `\nlatency at ${values['latency-rate']} rows/s (${l.samples} samples): p50 ${l.p50Ms.toFixed(2)} ms, p90 ${l.p90Ms.toFixed(2)} ms, p99 ${l.p99Ms.toFixed(2)} ms, max ${l.maxMs.toFixed(2)} ms`,
  );
} finally {
  await cluster.stop();
}
