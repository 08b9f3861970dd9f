/** DDL of HarmonyLite's own tables inside the application database. Pure. */
import {
  CAPTURED_TABLES,
  DEAD_LETTERS,
  GLOBAL_LOG,
  ORIGIN_SEQS,
  OUTBOX,
  POSITIONS,
  quoteIdent as q,
  REPLAY_GUARD,
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
];
