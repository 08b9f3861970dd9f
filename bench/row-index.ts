/**
 * The replicated-state index (docs/design.md, invariant 3): what it costs.
 * - build: a first start over an existing database indexes every row (rows/s, MB/s of table data);
 * - size: index bytes per row (dbstat);
 * - apply: µs per row of a batch applied by version (index lookup, row write with RETURNING,
 *   hash, index write) on a receiver, against the same rows written by a plain upsert;
 *   and of the same changes coming back to the node that wrote them (index only: "own"),
 *   wall time and CPU time (the machine is shared: CPU time varies less).
 *
 *   npx tsx bench/row-index.ts [--rows 1000000] [--runs 3]
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { installCapture } from '../src/cdc/capture-installer.ts';
import { ROW_VERSIONS } from '../src/cdc/names.ts';
import { TableFilter } from '../src/cdc/table-filter.ts';
import { encodeRecords } from '../src/codec/change-batch-codec.ts';
import type { ChangeRecord } from '../src/codec/change-record.ts';
import { RowDigest } from '../src/codec/row-digest.ts';
import { BatchApplier } from '../src/replication/batch-applier.ts';
import { HybridClock } from '../src/replication/hybrid-clock.ts';

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '3' } },
});
const ROWS = Number(values.rows);
const RUNS = Number(values.runs);
const SCHEMA =
  'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL, note TEXT)';
const NOTE = 'x'.repeat(240); // ~300 bytes a row, as the replication benchmarks write
const dir = mkdtempSync(join(tmpdir(), 'hl-bench-index-'));
const digest = await RowDigest.create();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function database(name: string): Database.Database {
  const db = new Database(join(dir, name));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(SCHEMA);
  return db;
}

function fill(db: Database.Database, rows: number): void {
  const insert = db.prepare('INSERT INTO items VALUES (?, ?, ?, ?, ?)');
  const tx = db.transaction((from: number) => {
    for (let i = from; i < Math.min(from + 10_000, rows + 1); i++)
      insert.run(i, `item ${i}`, i % 97, i / 7, NOTE);
  });
  for (let i = 1; i <= rows; i += 10_000) tx(i);
}

const build: { rowsPerSecond: number; mbPerSecond: number; bytesPerRow: number }[] = [];
for (let run = 0; run < RUNS; run++) {
  const db = database(`build-${run}.db`);
  fill(db, ROWS);
  db.pragma('wal_checkpoint(TRUNCATE)');
  const dataBytes = statSync(join(dir, `build-${run}.db`)).size;
  const t0 = performance.now();
  const state = installCapture(db, new TableFilter([], []), {
    captureWrites: true,
    index: { digest, nodeId: 1 },
  });
  const seconds = (performance.now() - t0) / 1000;
  if (state.indexed !== ROWS) throw new Error(`indexed ${state.indexed} of ${ROWS} rows`);
  const indexBytes = Number(
    db.prepare('SELECT sum(pgsize) FROM dbstat WHERE name = ?').pluck().get(ROW_VERSIONS) as number,
  );
  build.push({
    rowsPerSecond: ROWS / seconds,
    mbPerSecond: dataBytes / 1e6 / seconds,
    bytesPerRow: indexBytes / ROWS,
  });
  db.close();
}

// Apply: 100k changes in batches of 1,000 rows, versioned, against a plain upsert of the same rows.
const APPLY_ROWS = Math.min(ROWS, 100_000);
const clock = new HybridClock();
const records: ChangeRecord[] = [];
for (let i = 1; i <= APPLY_ROWS; i++) {
  records.push({
    FromNodeId: 2,
    Payload: {
      Id: i,
      Type: 'insert',
      TableName: 'items',
      Row: { id: i, name: `item ${i}`, qty: i % 97, price: i / 7 + 0.5, note: NOTE },
      CreatedAt: Date.now(),
      Version: clock.next(),
    },
  });
}
const messages = Array.from({ length: APPLY_ROWS / 1000 }, (_, m) => ({
  seq: m + 1,
  msgId: undefined,
  data: encodeRecords(records.slice(m * 1000, (m + 1) * 1000)),
}));
const versioned: number[] = [];
const versionedCpu: number[] = [];
const own: number[] = [];
const ownCpu: number[] = [];
const plain: number[] = [];
const cpuMicros = (since: NodeJS.CpuUsage) => {
  const c = process.cpuUsage(since);
  return (c.user + c.system) / APPLY_ROWS;
};
const newApplier = (db: Database.Database, nodeId: number) => {
  installCapture(db, new TableFilter([], []), { captureWrites: true, index: { digest, nodeId } });
  return new BatchApplier(db, {
    includeTables: [],
    excludeTables: [],
    nodeId,
    clock: new HybridClock().state,
    digest,
    localWrites: true,
    maxClockSkewMs: 60_000,
  });
};
for (let run = 0; run < RUNS; run++) {
  const db = database(`apply-${run}.db`);
  const applier = newApplier(db, 1);
  let t0 = performance.now();
  let c0 = process.cpuUsage();
  for (let i = 0; i < messages.length; i += 10) applier.apply(1, messages.slice(i, i + 10));
  versioned.push(((performance.now() - t0) * 1000) / APPLY_ROWS);
  versionedCpu.push(cpuMicros(c0));
  db.close();

  // The writer's side: node 2 wrote these rows (captured), and its own changes come back.
  const writer = database(`own-${run}.db`);
  const ownApplier = newApplier(writer, 2);
  const insert = writer.prepare('INSERT INTO items VALUES (?, ?, ?, ?, ?)');
  writer.transaction(() => {
    for (const r of records) {
      const row = r.Payload.Row;
      insert.run(row.id, row.name, row.qty, row.price, row.note);
    }
  })();
  t0 = performance.now();
  c0 = process.cpuUsage();
  for (let i = 0; i < messages.length; i += 10) ownApplier.apply(1, messages.slice(i, i + 10));
  own.push(((performance.now() - t0) * 1000) / APPLY_ROWS);
  ownCpu.push(cpuMicros(c0));
  writer.close();

  const bare = database(`plain-${run}.db`);
  const upsert = bare.prepare(
    'INSERT INTO items VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name, qty = excluded.qty, price = excluded.price, note = excluded.note',
  );
  const tx = bare.transaction((from: number) => {
    for (const r of records.slice(from, from + 10_000)) {
      const row = r.Payload.Row;
      upsert.run(BigInt(row.id as number), row.name, BigInt(row.qty as number), row.price, row.note);
    }
  });
  t0 = performance.now();
  for (let i = 0; i < APPLY_ROWS; i += 10_000) tx(i);
  plain.push(((performance.now() - t0) * 1000) / APPLY_ROWS);
  bare.close();
}
rmSync(dir, { recursive: true, force: true });

const out = {
  rows: ROWS,
  runs: RUNS,
  indexBuild: {
    rowsPerSecond: Math.round(median(build.map((b) => b.rowsPerSecond))),
    mbPerSecond: Math.round(median(build.map((b) => b.mbPerSecond))),
    secondsPerGb: Number((1000 / median(build.map((b) => b.mbPerSecond))).toFixed(1)),
  },
  indexBytesPerRow: Math.round(median(build.map((b) => b.bytesPerRow))),
  applyMicrosPerRow: {
    versioned: Number(median(versioned).toFixed(2)),
    versionedCpu: Number(median(versionedCpu).toFixed(2)),
    own: Number(median(own).toFixed(2)),
    ownCpu: Number(median(ownCpu).toFixed(2)),
    plainUpsert: Number(median(plain).toFixed(2)),
  },
};
process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
