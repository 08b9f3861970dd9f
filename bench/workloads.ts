/**
 * Benchmark workloads against a BenchCluster, and the machine's own limits
 * measured beside them in the same run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { BenchCluster } from './bench-cluster.ts';

export const BENCH_SCHEMA = `
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS probes (id INTEGER PRIMARY KEY, sent_at REAL NOT NULL);
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Waits until every database holds at least `want` rows in `items`. Polls the
 * highest id (microseconds) against `lastId` and counts (count(*) walks the whole table: 12-16 ms
 * at 200k rows) only once the last row written is there: counting every 10 ms
 * took most of a core of this 2-core machine away from the nodes being measured.
 */
export async function waitForRows(
  dbs: readonly Database.Database[],
  want: number,
  options: { lastId?: number; onProgress?: (rows: number) => void } = {},
): Promise<void> {
  const { onProgress } = options;
  const maxIds = dbs.map((db) => db.prepare('SELECT coalesce(max(id), 0) FROM items').pluck());
  const counts = dbs.map((db) => db.prepare('SELECT count(*) FROM items').pluck());
  // The id of the last row written: by default the highest id any of them holds now (the writer's).
  const lastId = options.lastId ?? Math.max(...maxIds.map((s) => s.get() as number));
  for (;;) {
    const low = Math.min(...maxIds.map((s) => s.get() as number));
    if (low >= lastId) {
      const min = Math.min(...counts.map((s) => s.get() as number));
      onProgress?.(min);
      if (min >= want) return;
      await sleep(50);
      continue;
    }
    onProgress?.(Math.min(want, low));
    await sleep(10);
  }
}

function payload(bytes: number, seed: number): string {
  let s = '';
  let x = seed * 2654435761;
  while (s.length < bytes) {
    x = (x * 1103515245 + 12345) >>> 0;
    s += x.toString(36);
  }
  return s.slice(0, bytes);
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function median(values: readonly number[]): number {
  return percentile(
    [...values].sort((a, b) => a - b),
    50,
  );
}

export interface ThroughputResult {
  readonly rows: number;
  readonly writeSeconds: number;
  readonly replicatedSeconds: number;
  readonly rowsPerSecond: number;
}

/**
 * Writers on the first `writers` nodes insert `rows` in total, `rowsPerTxn` per
 * transaction, as fast as they can; the clock stops when every node holds them all.
 */
export async function replicatedThroughput(
  cluster: BenchCluster,
  options: {
    rows: number;
    rowsPerTxn: number;
    rowBytes: number;
    writers: number;
    onProgress?: (done: number) => void;
  },
): Promise<ThroughputResult> {
  const { rows, rowsPerTxn, rowBytes, writers } = options;
  const dbs = cluster.nodes.map((n) => new Database(n.dbPath, { timeout: 10_000 }));
  try {
    const base = (dbs[0]!.prepare('SELECT count(*) AS c FROM items').get() as { c: number }).c;
    const target = base + rows;
    const perWriter = Math.floor(rows / writers);
    const body = payload(rowBytes, 1);
    const start = performance.now();
    // Interleave writers transaction by transaction, all from this one thread.
    const stmts = dbs
      .slice(0, writers)
      .map((db) => db.prepare('INSERT INTO items (writer, seq, payload) VALUES (?, ?, ?)'));
    const txns = dbs.slice(0, writers).map((db, w) =>
      db.transaction((from: number, to: number) => {
        for (let i = from; i < to; i++) stmts[w]!.run(w + 1, i, body);
      }),
    );
    for (let from = 0; from < perWriter; from += rowsPerTxn) {
      for (let w = 0; w < writers; w++) txns[w]!(from, Math.min(perWriter, from + rowsPerTxn));
      if (from % (rowsPerTxn * 50) === 0) await sleep(0); // let the writer's own timers run
    }
    const written = perWriter * writers;
    const writeSeconds = (performance.now() - start) / 1000;
    const want = base + written;
    const { onProgress } = options;
    await waitForRows(dbs, want, onProgress ? { onProgress: (n) => onProgress(n - base) } : {});
    const replicatedSeconds = (performance.now() - start) / 1000;
    void target;
    return { rows: written, writeSeconds, replicatedSeconds, rowsPerSecond: written / replicatedSeconds };
  } finally {
    for (const db of dbs) db.close();
  }
}

export interface LatencyResult {
  readonly samples: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
}

/**
 * Commit-to-visible latency at a steady rate: node 1 commits one row per
 * transaction at `rowsPerSecond`; node 2 is polled for each row's arrival.
 */
export async function commitToVisibleLatency(
  cluster: BenchCluster,
  options: { rowsPerSecond: number; seconds: number },
): Promise<LatencyResult> {
  const writer = new Database(cluster.nodes[0]!.dbPath, { timeout: 10_000 });
  const reader = new Database(cluster.nodes[1]!.dbPath, { readonly: true, timeout: 10_000 });
  const insert = writer.prepare('INSERT INTO probes (sent_at) VALUES (?)');
  // Rows of different shards arrive in any order: poll from the oldest probe still outstanding.
  const poll = reader.prepare('SELECT id FROM probes WHERE id >= ? ORDER BY id').pluck();
  const sentAt = new Map<number, number>();
  const latencies: number[] = [];
  const total = Math.round(options.rowsPerSecond * options.seconds);
  const intervalMs = 1000 / options.rowsPerSecond;
  const start = performance.now();
  let sent = 0;
  try {
    while (sent < total || sentAt.size > 0) {
      const now = performance.now();
      // Send every row that is due (keeps the rate even when the loop runs late).
      while (sent < total && now - start >= sent * intervalMs) {
        const t = performance.now();
        const id = Number(insert.run(t).lastInsertRowid);
        sentAt.set(id, t);
        sent++;
      }
      const oldest = sentAt.keys().next();
      if (!oldest.done) {
        for (const id of poll.all(oldest.value) as number[]) {
          const t = sentAt.get(id);
          if (t !== undefined) {
            latencies.push(performance.now() - t);
            sentAt.delete(id);
          }
        }
      }
      if (performance.now() - start > (options.seconds + 30) * 1000)
        throw new Error(`${sentAt.size} probes never arrived`);
      // 1 ms between polls: spinning (setImmediate) kept one of this machine's two cores busy, away
      // from the nodes and nats-server it measures. Arrivals are seen up to ~1 ms late (pessimistic).
      await sleep(1);
    }
  } finally {
    writer.close();
    reader.close();
  }
  latencies.sort((a, b) => a - b);
  return {
    samples: latencies.length,
    p50Ms: percentile(latencies, 50),
    p90Ms: percentile(latencies, 90),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies[latencies.length - 1] ?? NaN,
  };
}

/** This machine's limits, same row shape: plain inserts and plain upserts (the apply path without HarmonyLite). */
export function singleNodeLimits(options: { rows: number; rowsPerTxn: number; rowBytes: number }): {
  insertRowsPerSecond: number;
  applyRowsPerSecond: number;
} {
  const dir = mkdtempSync(join(tmpdir(), 'hl-limits-'));
  try {
    const db = new Database(join(dir, 'limits.db'));
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec(BENCH_SCHEMA);
    const body = payload(options.rowBytes, 1);
    const insert = db.prepare('INSERT INTO items (writer, seq, payload) VALUES (?, ?, ?)');
    const tx = db.transaction((from: number, to: number) => {
      for (let i = from; i < to; i++) insert.run(1, i, body);
    });
    let t0 = performance.now();
    for (let from = 0; from < options.rows; from += options.rowsPerTxn)
      tx(from, Math.min(options.rows, from + options.rowsPerTxn));
    const insertRowsPerSecond = options.rows / ((performance.now() - t0) / 1000);
    const upsert = db.prepare(
      'INSERT INTO items (id, writer, seq, payload) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET writer = excluded.writer, seq = excluded.seq, payload = excluded.payload',
    );
    const applyTx = db.transaction((from: number, to: number) => {
      for (let i = from; i < to; i++) upsert.run(BigInt(options.rows + i + 1), 2n, BigInt(i), body);
    });
    t0 = performance.now();
    for (let from = 0; from < options.rows; from += 1000) applyTx(from, Math.min(options.rows, from + 1000));
    const applyRowsPerSecond = options.rows / ((performance.now() - t0) / 1000);
    db.close();
    return { insertRowsPerSecond, applyRowsPerSecond };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
