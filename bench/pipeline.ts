/**
 * Where a replicated burst waits: one node writes N rows (100 per transaction)
 * as fast as it can while this samples, every 200 ms, the rows written, the
 * changes still waiting to be published on the writer, and the rows on the
 * receiver; then each node's CPU seconds and peak RSS. A stalled publisher
 * shows as "pending" rising with "written"; a slow receiver as "received"
 * trailing "written - pending".
 *
 *   npm run build && npx tsx bench/pipeline.ts [--shards 1] [--rows 100000]
 */
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { GLOBAL_LOG, quoteIdent as q } from '../src/cdc/names.ts';
import { BenchCluster, processStats } from './bench-cluster.ts';
import { BENCH_SCHEMA, replicatedThroughput } from './workloads.ts';

const { values } = parseArgs({
  options: {
    shards: { type: 'string', default: '1' },
    rows: { type: 'string', default: '100000' },
  },
});
const rows = Number(values.rows);
const cluster = await BenchCluster.start({
  nodes: 2,
  shards: Number(values.shards),
  replicas: 1,
  schema: BENCH_SCHEMA,
});
try {
  const [writer, receiver] = cluster.nodes.map((n) => new Database(n.dbPath, { readonly: true })) as [
    Database.Database,
    Database.Database,
  ];
  // Highest id rather than count(*) for the items tables (rows are written with ids 1..N): a count
  // walks the whole table, ~15 ms at 200k rows, CPU this probe would take from the nodes it measures.
  const maxId = (db: Database.Database) =>
    db.prepare('SELECT coalesce(max(id), 0) FROM items').pluck().get() as number;
  const pendingCount = (db: Database.Database) =>
    db
      .prepare(`SELECT count(*) FROM ${q(GLOBAL_LOG)}`)
      .pluck()
      .get() as number;
  const cpu = () => cluster.nodes.map((n) => processStats(n.child.pid!)?.cpuSeconds ?? 0);
  const cpu0 = cpu();
  const t0 = performance.now();
  console.log(
    '| s | written (highest id) | pending on the writer | received (highest id) |\n|---|---|---|---|',
  );
  const timer = setInterval(() => {
    const s = ((performance.now() - t0) / 1000).toFixed(2);
    console.log(`| ${s} | ${maxId(writer)} | ${pendingCount(writer)} | ${maxId(receiver)} |`);
  }, 200);
  const r = await replicatedThroughput(cluster, { rows, rowsPerTxn: 100, rowBytes: 100, writers: 1 });
  clearInterval(timer);
  const cpu1 = cpu();
  console.log(
    `\n${Math.round(r.rowsPerSecond)} rows/s replicated (written in ${r.writeSeconds.toFixed(2)} s, everywhere in ${r.replicatedSeconds.toFixed(2)} s)`,
  );
  console.log(`CPU s per node: ${cpu1.map((c, i) => (c - cpu0[i]!).toFixed(2)).join(' / ')}`);
  console.log(
    `peak RSS MB per node: ${cluster.nodes.map((n) => Math.round(n.peakRssBytes / 1048576)).join(' / ')}`,
  );
  writer.close();
  receiver.close();
} finally {
  await cluster.stop();
}
