/**
 * What a client with a busy timeout of 0 (the sqlite3 shell's and PHP's SQLite3
 * default) meets on a node's database: the daemon's write-lock footprint (share
 * of time the write lock is taken by someone else, and the longest hold seen)
 * and the share of such a client's single-statement writes refused with
 * "database is locked", at idle, while that client writes 10 rows/s, and while
 * another application writes 1,000 rows/s (100 per transaction) beside it.
 * Two nodes on one nats-server; node 1's database is measured.
 *
 *   npm run build && npx tsx bench/busy-timeout-zero.ts [--seconds 60]
 *   (HL_BENCH_SOURCE=1 runs the nodes from source); writes bench/results/busy-timeout-zero.json
 *
 * Footprint: a probe connection tries BEGIN IMMEDIATE (timeout 0) every ~2 ms
 * and rolls back at once; refused tries / all tries is the share of time the
 * lock was held by others (the daemon, and the phase's application writers),
 * and the longest run of refused tries is the longest hold seen (a pause of the
 * probe's own event loop inflates it). Refusals: the busy-timeout-0 writer
 * alone, no probe.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { BenchCluster, ROOT } from './bench-cluster.ts';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '60' } } });
const seconds = Number(values.seconds);

const SCHEMA = `
CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, payload TEXT NOT NULL);
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isBusy = (err: unknown) => (err as { code?: string }).code?.startsWith('SQLITE_BUSY') === true;

/** An application writing `rowsPerSecond` rows in transactions of 100, with a 5 s busy timeout. */
function bulkWriter(db: string, rowsPerSecond: number): () => void {
  if (rowsPerSecond === 0) return () => undefined;
  const c = new Database(db, { timeout: 5000 });
  const insert = c.prepare('INSERT INTO items (payload) VALUES (?)');
  const txn = c.transaction((n: number) => {
    for (let i = 0; i < n; i++) insert.run('x'.repeat(100));
  });
  const timer = setInterval(() => txn(100), 100_000 / rowsPerSecond);
  return () => {
    clearInterval(timer);
    c.close();
  };
}

/** A busy-timeout-0 writer: one autocommit INSERT every 100 ms for `ms`; returns writes and refusals. */
async function zeroTimeoutWriter(db: string, ms: number): Promise<{ writes: number; refused: number }> {
  const c = new Database(db, { timeout: 0 });
  const insert = c.prepare('INSERT INTO notes (body) VALUES (?)');
  let writes = 0;
  let refused = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    writes++;
    try {
      insert.run(`note ${writes}`);
    } catch (err) {
      if (!isBusy(err)) throw err;
      refused++;
    }
    await sleep(100);
  }
  c.close();
  return { writes, refused };
}

/** Lock footprint of everyone else, probed every ~2 ms for `ms`, while `tenPerSecond` adds a 10 writes/s client. */
async function footprint(db: string, ms: number, tenPerSecond: boolean) {
  const probe = new Database(db, { timeout: 0 });
  const writer = new Database(db, { timeout: 5000 });
  const note = writer.prepare('INSERT INTO notes (body) VALUES (?)');
  const timer = tenPerSecond ? setInterval(() => note.run('probe-phase'), 100) : undefined;
  let tries = 0;
  let refused = 0;
  let runStart: number | undefined;
  let longestMs = 0;
  const end = Date.now() + ms;
  while (Date.now() < end) {
    tries++;
    const t = performance.now();
    try {
      probe.exec('BEGIN IMMEDIATE');
      probe.exec('ROLLBACK');
      if (runStart !== undefined) longestMs = Math.max(longestMs, t - runStart);
      runStart = undefined;
    } catch (err) {
      if (!isBusy(err)) throw err;
      refused++;
      runStart ??= t;
    }
    await sleep(2);
  }
  if (timer) clearInterval(timer);
  probe.close();
  writer.close();
  return { tries, heldShare: refused / tries, longestHoldMs: longestMs };
}

const cluster = await BenchCluster.start({ nodes: 2, shards: 1, replicas: 1, schema: SCHEMA });
const db = cluster.nodes[0]!.dbPath;
const results: Record<string, unknown>[] = [];
try {
  for (const phase of [
    { name: 'idle', bulkRowsPerSecond: 0, tenPerSecond: false },
    { name: '10 writes/s', bulkRowsPerSecond: 0, tenPerSecond: true },
    { name: '1k rows/s', bulkRowsPerSecond: 1000, tenPerSecond: true },
  ]) {
    const stopBulk = bulkWriter(db, phase.bulkRowsPerSecond);
    await sleep(2000);
    const f = await footprint(db, (seconds * 1000) / 3, phase.tenPerSecond);
    const w = await zeroTimeoutWriter(db, seconds * 1000);
    stopBulk();
    const row = {
      phase: phase.name,
      lock_held_share_pct: +(f.heldShare * 100).toFixed(3),
      longest_hold_ms: +f.longestHoldMs.toFixed(1),
      probes: f.tries,
      bt0_writes: w.writes,
      bt0_refused: w.refused,
      bt0_refused_pct: +((w.refused / w.writes) * 100).toFixed(3),
    };
    results.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  await cluster.stop();
}
console.table(results);
const out = join(ROOT, 'bench', 'results');
mkdirSync(out, { recursive: true });
writeFileSync(join(out, 'busy-timeout-zero.json'), `${JSON.stringify({ seconds, results }, null, 2)}\n`);
