/** DDL of HarmonyLite's own tables inside the application database. Pure. */
import {
  CAPTURED_TABLES,
  CONFLICTS,
  DEAD_LETTERS,
  INDEXED_TABLES,
  MIGRATIONS,
  PARKED,
  ROW_VERSIONS,
  GLOBAL_LOG,
  ORIGIN_SEQS,
  OUTBOX,
  POSITIONS,
  quoteIdent as q,
  REPLAY_GUARD,
  RETIRED_NAMES,
} from './names.ts';

export const INTERNAL_TABLES_SQL: readonly string[] = [
  // AUTOINCREMENT: ids never go back after rows are deleted, so "id > cursor" scans stay correct.
  `CREATE TABLE IF NOT EXISTS ${q(GLOBAL_LOG)} (id INTEGER PRIMARY KEY AUTOINCREMENT, change_table_id INTEGER NOT NULL, table_name TEXT NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS ${q(REPLAY_GUARD)} (id INTEGER PRIMARY KEY)`,
  `CREATE TABLE IF NOT EXISTS ${q(POSITIONS)} (shard INTEGER PRIMARY KEY, stream_seq INTEGER NOT NULL, updated_at INTEGER NOT NULL, last_change_at INTEGER NOT NULL DEFAULT 0)`,
  `CREATE TABLE IF NOT EXISTS ${q(ORIGIN_SEQS)} (origin INTEGER NOT NULL, shard INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (origin, shard)) WITHOUT ROWID`,
  `CREATE TABLE IF NOT EXISTS ${q(OUTBOX)} (shard INTEGER PRIMARY KEY, seq INTEGER NOT NULL, last_global_id INTEGER, payload BLOB)`,
  `CREATE TABLE IF NOT EXISTS ${q(DEAD_LETTERS)} (id INTEGER PRIMARY KEY AUTOINCREMENT, shard INTEGER NOT NULL, stream_seq INTEGER NOT NULL, msg_id TEXT, reason TEXT NOT NULL, payload BLOB, created_at INTEGER NOT NULL)`,
  `CREATE TABLE IF NOT EXISTS ${q(CAPTURED_TABLES)} (name TEXT PRIMARY KEY, schema TEXT NOT NULL) WITHOUT ROWID`,
  // state: 0 live, 1 deleted (tombstone), 2 displaced by a newer row holding one of its UNIQUE values.
  `CREATE TABLE IF NOT EXISTS ${q(ROW_VERSIONS)} (tbl TEXT NOT NULL, pk BLOB NOT NULL, version INTEGER NOT NULL, origin INTEGER NOT NULL, hash INTEGER, state INTEGER NOT NULL, PRIMARY KEY (tbl, pk)) WITHOUT ROWID`,
  `CREATE TABLE IF NOT EXISTS ${q(INDEXED_TABLES)} (name TEXT PRIMARY KEY) WITHOUT ROWID`,
  // kind: 1 deferred (a newer remote change to a row with local writes not yet versioned), 2 displaced.
  `CREATE TABLE IF NOT EXISTS ${q(PARKED)} (tbl TEXT NOT NULL, pk BLOB NOT NULL, kind INTEGER NOT NULL, version INTEGER NOT NULL, origin INTEGER NOT NULL, type TEXT NOT NULL, row BLOB NOT NULL, PRIMARY KEY (tbl, pk, kind)) WITHOUT ROWID`,
  `CREATE TABLE IF NOT EXISTS ${q(CONFLICTS)} (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, tbl TEXT NOT NULL, pk BLOB NOT NULL, reason TEXT NOT NULL, lost_version INTEGER NOT NULL, lost_origin INTEGER NOT NULL, lost_type TEXT NOT NULL, lost_row BLOB, won_version INTEGER NOT NULL, won_origin INTEGER NOT NULL, detail TEXT)`,
  // status: 'applied', 'failed' (held: retried until it applies or is resolved) or 'resolved' (by the operator).
  `CREATE TABLE IF NOT EXISTS ${q(MIGRATIONS)} (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, name TEXT NOT NULL, status TEXT NOT NULL, at INTEGER NOT NULL, statement TEXT, error TEXT)`,
  // col '' names the table itself; renamed_to NULL: dropped.
  `CREATE TABLE IF NOT EXISTS ${q(RETIRED_NAMES)} (tbl TEXT NOT NULL, col TEXT NOT NULL, renamed_to TEXT, retired_at INTEGER NOT NULL, PRIMARY KEY (tbl, col)) WITHOUT ROWID`,
];

/** Columns added to internal tables after their first release: [table, column, declaration], added by the installer when missing. */
export const INTERNAL_COLUMNS: readonly (readonly [string, string, string])[] = [
  [CONFLICTS, 'detail', 'TEXT'],
];
