/**
 * Capture cost: rows/s of inserts into a plain table and into the
 * same table with our capture installed, 1 and 100 rows per transaction, side
 * by side in one run; medians of RUNS runs. A third column shows HarmonyLite's
 * `pragma_function_list` guard on the same triggers, when a default connection
 * can write through it: it can while `trusted_schema` defaults to ON (as in
 * better-sqlite3 and Debian's sqlite3); with it OFF every write fails with
 * "unsafe use of virtual table" (test/cdc/any-client.test.ts shows ours does not).
 *
 * Each measurement uses a fresh file database in WAL mode with
 * `synchronous = NORMAL`, as applications run it. Target: captured <= 3.5x plain.
 *
 * Run: npx tsx bench/capture.ts [rows per measurement, default 20000]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../src/cdc/capture-installer.ts';
import { quoteIdent, REPLAY_GUARD, CHANGE_TRIGGER_KINDS, triggerName } from '../src/cdc/names.ts';
import { TableFilter } from '../src/cdc/table-filter.ts';

const RUNS = 5;
const ROWS = Number(process.argv[2] ?? 20_000);
const BATCHES = [1, 100] as const;
const MODES = ['plain', 'captured', 'function-list'] as const;
type Mode = (typeof MODES)[number];

const TABLE_SQL = 'CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, price REAL)';
const OUR_GUARD = `WHEN NOT EXISTS (SELECT 1 FROM ${quoteIdent(REPLAY_GUARD)})`;
const FUNCTION_LIST_GUARD =
  "WHEN (SELECT count(*) FROM pragma_function_list WHERE name = 'harmonylite_version') = 0";

const dir = mkdtempSync(join(tmpdir(), 'hl-bench-capture-'));
let serial = 0;

/** A fresh database with table `t` set up for `mode`; the caller closes it. */
function setup(mode: Mode): { db: Database.Database; path: string } {
  const path = join(dir, `${mode}-${serial++}.db`);
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  db.exec(TABLE_SQL);
  if (mode !== 'plain') installCapture(db, new TableFilter([], []), { captureWrites: true });
  if (mode === 'function-list') {
    // Same triggers as ours, with HarmonyLite's guard in place of the replay-guard table.
    const triggers = db
      .prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = 't'")
      .all() as { name: string; sql: string }[];
    if (triggers.length !== CHANGE_TRIGGER_KINDS.length || !triggers.every((t) => t.sql.includes(OUR_GUARD)))
      throw new Error('unexpected trigger SQL: the replay guard changed; update this bench');
    for (const kind of CHANGE_TRIGGER_KINDS) {
      const name = triggerName('t', kind);
      const sql = triggers.find((t) => t.name === name)!.sql;
      db.exec(`DROP TRIGGER ${quoteIdent(name)}`);
      db.exec(sql.replace(OUR_GUARD, FUNCTION_LIST_GUARD));
    }
  }
  return { db, path };
}

/** Whether a default connection can write through a `pragma_function_list` guard (no trusted_schema). */
function functionListUsable(): string | undefined {
  const { db } = setup('function-list');
  try {
    db.prepare("INSERT INTO t (name, qty, price) VALUES ('x', 1, 1.5)").run();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  } finally {
    db.close();
  }
}

/** Rows per second inserting ROWS rows, `perTxn` per transaction. */
function measure(mode: Mode, perTxn: number): number {
  const { db, path } = setup(mode);
  try {
    const insert = db.prepare('INSERT INTO t (name, qty, price) VALUES (?, ?, ?)');
    const txn = db.transaction((from: number) => {
      for (let i = from; i < from + perTxn; i++) insert.run(`item-${i}`, i, i * 0.25);
    });
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < ROWS; i += perTxn) {
      if (perTxn === 1) insert.run(`item-${i}`, i, i * 0.25);
      else txn(i);
    }
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    return ROWS / seconds;
  } finally {
    db.close();
    for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const fmt = (n: number) => `${Math.round(n / 100) / 10}k`.padStart(8);

try {
  const unusable = functionListUsable();
  const modes = MODES.filter((m) => m !== 'function-list' || unusable === undefined);
  if (unusable !== undefined) console.log(`function-list guard skipped: ${unusable}`);
  const sqlite = new Database(':memory:').prepare('SELECT sqlite_version()').pluck().get() as string;
  console.log(
    `capture cost: ${ROWS} rows per measurement, median of ${RUNS} runs, WAL + synchronous=NORMAL, ` +
      `SQLite ${sqlite}, load average ${loadavg()[0]!.toFixed(1)} (other load skews the ratios)\n`,
  );
  const header = ['rows/txn', ...modes.map((m) => m.padStart(13)), '  captured/plain'];
  if (modes.includes('function-list')) header.push('  function-list/plain');
  console.log(header.join(' '));
  for (const perTxn of BATCHES) {
    const samples = new Map<Mode, number[]>(modes.map((m) => [m, []]));
    measure('plain', perTxn); // warm-up: JIT, page cache
    for (let run = 0; run < RUNS; run++) {
      // Interleaved, so drift (thermal, other load) hits every mode alike.
      for (const m of modes) samples.get(m)!.push(measure(m, perTxn));
    }
    const med = new Map(modes.map((m) => [m, median(samples.get(m)!)]));
    const plain = med.get('plain')!;
    const cells = [String(perTxn).padStart(8), ...modes.map((m) => `${fmt(med.get(m)!)} rows/s`)];
    cells.push(`${(plain / med.get('captured')!).toFixed(2)}x slower`.padStart(16));
    const fl = med.get('function-list');
    if (fl !== undefined) cells.push(`${(plain / fl).toFixed(2)}x slower`.padStart(21));
    console.log(cells.join(' '));
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
