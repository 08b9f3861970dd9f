/**
 * Shared setup of the capture tests: a real database file in a temp dir, opened
 * the way the daemon opens it, with capture installed; other SQLite clients
 * (the stock sqlite3 shell, Python's sqlite3, better-sqlite3 with defaults) as
 * the application's writers; and a scan of what was logged.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture, type CaptureState } from '../../src/cdc/capture-installer.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { ChangelogScanner, type PendingChange } from '../../src/changelog/changelog-scanner.ts';
import { RowDigest } from '../../src/codec/row-digest.ts';
import { fromWire, type SqlValue } from '../../src/codec/sql-value.ts';
import { openDatabase } from '../../src/sqlite/open-database.ts';
import { tempDir } from '../helpers/temp-dir.ts';

export const digest = await RowDigest.create();

export interface CaptureFixture {
  readonly dir: string;
  readonly path: string;
  /** The daemon's write connection (WAL, synchronous = NORMAL, busy timeout). */
  readonly db: Database.Database;
  /** Installs or updates capture with the given filter (default: every table). */
  install(include?: readonly string[], exclude?: readonly string[]): CaptureState;
  /** Every pending change, in global order, read on a fresh read-only connection. */
  scan(): PendingChange[];
  /** Closes the connection and removes the directory. */
  [Symbol.dispose](): void;
}

/** A database created with `schema`, opened as the daemon does; capture installed unless `install` is false. */
export function captureFixture(schema: string, options: { install?: boolean } = {}): CaptureFixture {
  const dir = tempDir('hl-cdc-');
  const path = join(dir.path, 'app.db');
  const create = new Database(path);
  create.exec(schema);
  create.close();
  const db = openDatabase(path, { busyTimeoutMs: 5000, readonly: false });
  const fixture: CaptureFixture = {
    dir: dir.path,
    path,
    db,
    install: (include = [], exclude = []) =>
      installCapture(db, new TableFilter(include, exclude), {
        captureWrites: true,
        index: { digest, nodeId: 1 },
      }),
    scan: () => scanAll(path),
    [Symbol.dispose]() {
      if (db.open) db.close();
      dir.remove();
    },
  };
  if (options.install !== false) fixture.install();
  return fixture;
}

/** Every pending change of the database at `path`, in global order. */
export function scanAll(path: string): PendingChange[] {
  const read = new Database(path, { readonly: true });
  try {
    const res = new ChangelogScanner(read).scan(0, 1_000_000);
    assert.deepEqual(res.orphans, [], 'no orphans expected');
    return res.changes;
  } finally {
    read.close();
  }
}

/** A change's row read back as SQLite values (integers as bigint, REAL as number). */
export function sqlRow(c: PendingChange): Record<string, SqlValue> {
  return Object.fromEntries(Object.entries(c.row).map(([k, v]) => [k, fromWire(v)]));
}

/** A change as `[table, type, row]`, compact for deepEqual. */
export function brief(c: PendingChange): [string, string, Record<string, SqlValue>] {
  return [c.table, c.type, sqlRow(c)];
}

/** Runs SQL in the stock sqlite3 shell (default settings); fails on any error or stderr output. */
export function sqlite3(path: string, sql: string): string {
  const r = spawnSync('sqlite3', [path, sql], { encoding: 'utf8' });
  assert.equal(r.error, undefined, `sqlite3 could not run: ${String(r.error)}`);
  assert.equal(r.stderr, '', `sqlite3 wrote to stderr for: ${sql}`);
  assert.equal(r.status, 0, `sqlite3 exited ${r.status} for: ${sql}`);
  return r.stdout;
}

/**
 * Runs transactions in Python's sqlite3 with default settings: each inner list
 * is one transaction, committed. Returns the rows of statements that return
 * any, one JSON array per line.
 */
export function python(path: string, transactions: readonly (readonly string[])[]): string {
  const script = [
    'import json, sqlite3, sys',
    'c = sqlite3.connect(sys.argv[1])',
    'for txn in json.loads(sys.argv[2]):',
    '    for sql in txn:',
    '        rows = c.execute(sql).fetchall()',
    '        if rows: print(json.dumps(rows))',
    '    c.commit()',
    'c.close()',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script, path, JSON.stringify(transactions)], { encoding: 'utf8' });
  assert.equal(r.error, undefined, `python3 could not run: ${String(r.error)}`);
  assert.equal(r.stderr, '', 'python3 wrote to stderr');
  assert.equal(r.status, 0, `python3 exited ${r.status}`);
  return r.stdout;
}

/** Names of the triggers on `table`, sorted. */
export function triggersOn(db: Database.Database, table: string): string[] {
  return db
    .prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ? ORDER BY name")
    .pluck()
    .all(table) as string[];
}

/** True when a table (or view, index, trigger) of that name exists. */
export function exists(db: Database.Database, name: string): boolean {
  return db.prepare('SELECT 1 FROM sqlite_schema WHERE name = ?').get(name) !== undefined;
}
