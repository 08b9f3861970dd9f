import type { Database, Statement } from 'better-sqlite3';
import { hashLayout, type RowDigest } from '../codec/row-digest.ts';
import type { SqlValue } from '../codec/sql-value.ts';
import {
  changeLogTable,
  GLOBAL_LOG,
  INDEXED_TABLES,
  quoteIdent as q,
  ROW_VERSIONS,
  valueColumn,
} from './names.ts';
import { tableRows } from './table-pages.ts';
import type { TableSchema } from './table-schema.ts';
import { capturedColumns } from './trigger-sql.ts';

/** The version of rows that no change versioned: a backfill, or the index built over an existing database. */
const BASE_VERSION = 0;
const LIVE = 0;

export interface ReconcileOptions {
  readonly digest: RowDigest;
  readonly nodeId: number;
  /** Log what differs as changes (capture installed); false on a read replica: the index is only built. */
  readonly log: boolean;
  /** The table appeared while capture ran: its rows are logged with the lowest version (a backfill). */
  readonly backfill: boolean;
  /** Called every `PROGRESS_ROWS` rows with the rows read so far: a large table takes seconds. */
  readonly progress?: (table: string, rows: number) => void;
  /**
   * Keys (canonical bytes as latin1) whose rows equalled their index entry before a
   * replicated migration changed the table: every node runs the migration itself, so
   * what it did to them is indexed (keeping their versions) instead of logged; N nodes
   * do not publish the same change N times, nor overwrite a newer write elsewhere with
   * it. Rows with local writes in flight are not among them and are logged as usual.
   */
  readonly migrated?: ReadonlySet<string>;
  /** Columns renamed since the index was written, new name -> old name: rows the rename alone changed are re-hashed, not logged. */
  readonly renamed?: ReadonlyMap<string, string>;
}

const PROGRESS_ROWS = 100_000;

export interface ReconcileResult {
  /** Rows indexed without being logged (the index built over existing rows). */
  readonly indexed: number;
  /** Rows logged at the lowest version (backfill of a table that appeared while capture ran). */
  readonly backfilled: number;
  /** Writes that escaped capture (triggers absent), logged as inserts, updates and deletes. */
  readonly escaped: number;
}

/**
 * The safety net of invariant 9: compares a table's rows with the
 * replicated-state index and logs what differs, so that nothing the application
 * wrote escapes replication, whatever tool rebuilt the table or whenever the
 * triggers were absent. A table the index has never seen is indexed as it is
 * (first start: its rows are where every node started) or, when it appeared
 * while capture ran, backfilled: its rows are logged with the lowest version, so
 * they never overwrite a change any node made, nor resurrect a deleted row.
 * Runs inside the capture install's transaction, after the triggers exist.
 */
export function reconcileIndex(
  db: Database,
  schema: TableSchema,
  options: ReconcileOptions,
): ReconcileResult {
  const { digest, nodeId } = options;
  const columns = capturedColumns(schema);
  const layout = hashLayout(columns);
  const keyIndexes = schema.keyColumns.map((k) => columns.indexOf(k));
  const known =
    db.prepare(`SELECT 1 FROM ${q(INDEXED_TABLES)} WHERE name = ?`).get(schema.name) !== undefined;
  const get = db
    .prepare(`SELECT hash, state FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND pk = ?`)
    .raw(true)
    .safeIntegers(true);
  const put = db.prepare(
    `INSERT INTO ${q(ROW_VERSIONS)} (tbl, pk, version, origin, hash, state) VALUES (?, ?, ?, ?, ?, ${LIVE}) ` +
      `ON CONFLICT (tbl, pk) DO UPDATE SET version = excluded.version, origin = excluded.origin, hash = excluded.hash, state = excluded.state`,
  );
  const rebase = db.prepare(
    `UPDATE ${q(ROW_VERSIONS)} SET hash = ?, state = ${LIVE} WHERE tbl = ? AND pk = ?`,
  );
  const rehash = db.prepare(`UPDATE ${q(ROW_VERSIONS)} SET hash = ? WHERE tbl = ? AND pk = ?`);
  const renamed = options.renamed ?? new Map<string, string>();
  const oldLayout = renamed.size === 0 ? undefined : hashLayout(columns.map((c) => renamed.get(c) ?? c));
  const log = options.log ? changeLogger(db, schema, columns) : undefined;
  let indexed = 0;
  let backfilled = 0;
  let escaped = 0;
  let liveSeen = 0;
  let read = 0;
  // What the change log already carries (pending, or published and not back yet): not logged twice.
  const logged = options.log
    ? loggedStates(db, schema, columns, keyIndexes, digest)
    : new Map<string, bigint | null>();
  for (const values of tableRows(db, schema, columns)) {
    if (++read % PROGRESS_ROWS === 0) options.progress?.(schema.name, read);
    const pk = digest.key(
      keyIndexes.map((i) => values[i]!),
      schema.keyFold,
    );
    const hash = digest.hash(layout, values);
    const latest = logged.get(pk.toString('latin1'));
    logged.delete(pk.toString('latin1'));
    const entry = get.get(schema.name, pk) as [bigint | null, bigint] | undefined;
    if (entry === undefined && !known) {
      // Accounted for at the lowest version: clean for the applier, and never newer than a real change.
      put.run(schema.name, pk, BASE_VERSION, nodeId, hash);
      if (options.backfill && log !== undefined) {
        log(values, 'insert', 0);
        backfilled++;
      } else {
        indexed++;
      }
      continue;
    }
    if (entry !== undefined && Number(entry[1]) === LIVE) {
      liveSeen++;
      if (entry[0] === hash) continue;
      // Only the column names changed: the same version, hashed under the new names.
      if (oldLayout !== undefined && entry[0] === digest.hash(oldLayout, values)) {
        rehash.run(hash, schema.name, pk);
        continue;
      }
    }
    if (entry !== undefined && options.migrated?.has(pk.toString('latin1')) === true) {
      rebase.run(hash, schema.name, pk);
      indexed++;
      continue;
    }
    if (latest === hash) continue; // its last logged change holds these values
    if (entry === undefined && options.migrated !== undefined && latest === undefined) {
      // Inserted by the migration, on every node.
      put.run(schema.name, pk, BASE_VERSION, nodeId, hash);
      indexed++;
      continue;
    }
    if (log !== undefined) {
      log(values, entry !== undefined && Number(entry[1]) === LIVE ? 'update' : 'insert', Date.now());
      escaped++;
    }
  }
  if (log !== undefined && known)
    escaped += logMissing(db, schema, digest, liveSeen, log, logged, options.migrated);
  db.prepare(`INSERT OR IGNORE INTO ${q(INDEXED_TABLES)} (name) VALUES (?)`).run(schema.name);
  return { indexed, backfilled, escaped };
}

/**
 * Keys of the rows that equal their index entry (no local write in flight), as
 * latin1 strings: taken inside a replicated migration's transaction before its
 * statements run, for `ReconcileOptions.migrated`.
 */
export function syncedKeys(db: Database, schema: TableSchema, digest: RowDigest): Set<string> {
  const columns = capturedColumns(schema);
  const layout = hashLayout(columns);
  const keyIndexes = schema.keyColumns.map((k) => columns.indexOf(k));
  const get = db
    .prepare(`SELECT hash FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND pk = ? AND state = ${LIVE}`)
    .pluck()
    .safeIntegers(true);
  const out = new Set<string>();
  for (const values of tableRows(db, schema, columns)) {
    const pk = digest.key(
      keyIndexes.map((i) => values[i]!),
      schema.keyFold,
    );
    if ((get.get(schema.name, pk) as bigint | null | undefined) === digest.hash(layout, values))
      out.add(pk.toString('latin1'));
  }
  return out;
}

/**
 * Per key (canonical bytes as latin1), the state its newest change-log row
 * leaves: the hash of its values, or null for a delete.
 */
function loggedStates(
  db: Database,
  schema: TableSchema,
  columns: readonly string[],
  keyIndexes: readonly number[],
  digest: RowDigest,
): Map<string, bigint | null> {
  const layout = hashLayout(columns);
  const out = new Map<string, bigint | null>();
  const rows = db
    .prepare(
      `SELECT type, ${columns.map((c) => q(valueColumn(c))).join(', ')} FROM ${q(changeLogTable(schema.name))} ORDER BY id`,
    )
    .raw(true)
    .safeIntegers(true)
    .all() as [string, ...SqlValue[]][];
  for (const [type, ...values] of rows) {
    const pk = digest.key(
      keyIndexes.map((i) => values[i]!),
      schema.keyFold,
    );
    out.set(pk.toString('latin1'), type === 'delete' ? null : digest.hash(layout, values));
  }
  return out;
}

type LogChange = (
  values: readonly SqlValue[],
  type: 'insert' | 'update' | 'delete',
  createdAt: number,
) => void;

/** Writes one change into the table's change log and the global log, as the triggers would. */
function changeLogger(db: Database, schema: TableSchema, columns: readonly string[]): LogChange {
  const insert: Statement = db.prepare(
    `INSERT INTO ${q(changeLogTable(schema.name))} (${columns.map((c) => q(valueColumn(c))).join(', ')}, type, created_at, state) ` +
      `VALUES (${columns.map(() => '?').join(', ')}, ?, ?, 0)`,
  );
  const global = db.prepare(`INSERT INTO ${q(GLOBAL_LOG)} (change_table_id, table_name) VALUES (?, ?)`);
  return (values, type, createdAt) => {
    const id = insert.run(...values, type, createdAt).lastInsertRowid;
    global.run(id, schema.name);
  };
}

/**
 * Keys the index holds as live whose rows are gone (deleted while capture was
 * absent): logged as deletes. Looked up only when the count says some are missing.
 */
function logMissing(
  db: Database,
  schema: TableSchema,
  digest: RowDigest,
  liveSeen: number,
  log: LogChange,
  logged: ReadonlyMap<string, bigint | null>,
  migrated: ReadonlySet<string> | undefined,
): number {
  const live = Number(
    db
      .prepare(`SELECT count(*) FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND state = ${LIVE}`)
      .pluck()
      .safeIntegers(true)
      .get(schema.name) as bigint,
  );
  if (live === liveSeen) return 0;
  const columns = capturedColumns(schema);
  const keyIs = schema.keyColumns.map((k) => `${q(k)} IS ?`).join(' AND ');
  const exists = db.prepare(`SELECT 1 FROM ${q(schema.name)} WHERE ${keyIs}`).pluck();
  const tombstone = db.prepare(
    `UPDATE ${q(ROW_VERSIONS)} SET state = 1, hash = NULL WHERE tbl = ? AND pk = ?`,
  );
  const entries = db
    .prepare(`SELECT pk FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND state = ${LIVE}`)
    .pluck()
    .all(schema.name) as Buffer[];
  let deletes = 0;
  for (const pk of entries) {
    if (logged.get(pk.toString('latin1')) === null) continue; // its delete is logged already
    const key = digest.decodeKey(pk);
    if (exists.get(key) !== undefined) continue;
    if (migrated?.has(pk.toString('latin1')) === true) {
      // Deleted by a migration every node runs: a tombstone, not a change to publish.
      tombstone.run(schema.name, pk);
      continue;
    }
    // A delete carries the key; the other columns are unknown now and travel as NULL.
    const values = columns.map((c) => {
      const k = schema.keyColumns.indexOf(c);
      return k < 0 ? null : key[k]!;
    });
    log(values, 'delete', Date.now());
    // Not live any more: a later reconcile must not log the same delete again before it comes back.
    tombstone.run(schema.name, pk);
    deletes++;
  }
  return deletes;
}
