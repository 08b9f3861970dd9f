/**
 * Names of everything HarmonyLite creates inside the application's database.
 * Pure: no I/O, importable by workers. Every object of ours starts with
 * `__harmonylite__`; `-cleanup` matches them with GLOB, where `_` is literal
 * (HarmonyLite's LIKE treated `_` as a wildcard and hit unrelated tables).
 */

export const PREFIX = '__harmonylite__';

/** The seed's global ordering log: one row per captured change, in commit order. */
export const GLOBAL_LOG = '__harmonylite___global_change_log';
/** Invariant 6: while the applier's transaction holds a row here, triggers do not capture. Never committed non-empty. */
export const REPLAY_GUARD = '__harmonylite___replay_guard';
/** Stream position applied per shard, written in the same transaction as the rows it applied (invariant 4). */
export const POSITIONS = '__harmonylite___positions';
/** Highest batch sequence applied per origin node and shard: drops re-published batches (invariant 1). */
export const ORIGIN_SEQS = '__harmonylite___origin_seqs';
/** Per shard, this node's last assigned batch sequence and the batch in flight (invariant 2). */
export const OUTBOX = '__harmonylite___outbox';
/** Messages that can never apply, with the reason and raw bytes (invariant 5). */
export const DEAD_LETTERS = '__harmonylite___dead_letters';
/** Tables under capture and the columns their triggers capture. */
export const CAPTURED_TABLES = '__harmonylite___captured_tables';
/**
 * The replicated-state index: per row key its newest version, origin, a hash of its
 * values and whether it is live, deleted or displaced (docs/design.md, invariants 3 and 9).
 * Kept by `-cleanup`, so writes made while capture was absent are found at the next start.
 */
export const ROW_VERSIONS = '__harmonylite___row_versions';
/** Tables whose rows the index accounts for (a table without an entry is indexed from scratch). Kept by `-cleanup`. */
export const INDEXED_TABLES = '__harmonylite___indexed_tables';
/** Changes waiting for a row's local writes to come back versioned, and rows displaced by a UNIQUE value. */
export const PARKED = '__harmonylite___parked';
/** Losing versions of rows: writes superseded by newer ones, rows displaced by a UNIQUE collision. */
export const CONFLICTS = '__harmonylite___conflicts';
/**
 * Tables and columns this node renamed or dropped, with the new name when known: a change
 * naming one is mapped or skipped, never held for a schema that will not come back.
 * Kept by `-cleanup`, like the index.
 */
export const RETIRED_NAMES = '__harmonylite___retired_names';

/**
 * Replicated migrations (`-migrate`) this node applied, failed or was told to pass over,
 * by stream sequence. Kept by `-cleanup` and carried by snapshots: it is what keeps a
 * migration from running twice on one database.
 */
export const MIGRATIONS = '__harmonylite___migrations';

/**
 * This database's generated node id (the default `node_id`). Created by the node at its first
 * start, not by capture: left out of snapshots, so a restored copy never takes another node's id.
 */
export const NODE_IDENTITY = '__harmonylite___node_identity';
/** The identity (creation time) of each shard stream whose positions this database holds. */
export const STREAM_IDENTITIES = '__harmonylite___stream_identities';
/** Tables of ours created outside capture install; `-cleanup` drops them too. */
export const IDENTITY_TABLES = [NODE_IDENTITY, STREAM_IDENTITIES] as const;

export const INTERNAL_TABLES = [
  GLOBAL_LOG,
  REPLAY_GUARD,
  POSITIONS,
  ORIGIN_SEQS,
  OUTBOX,
  DEAD_LETTERS,
  CAPTURED_TABLES,
  ROW_VERSIONS,
  INDEXED_TABLES,
  PARKED,
  CONFLICTS,
  MIGRATIONS,
  RETIRED_NAMES,
] as const;

/**
 * Internal tables `-cleanup` keeps: the index finds the writes made while capture was absent,
 * retired names map old-schema changes, the migration record keeps migrations from running twice.
 */
export const KEPT_BY_CLEANUP: readonly string[] = [ROW_VERSIONS, INDEXED_TABLES, RETIRED_NAMES, MIGRATIONS];

export function changeLogTable(table: string): string {
  return `${PREFIX}${table}_change_log`;
}

/** The triggers every captured table has (the BEFORE ones only tables with UNIQUE constraints besides the key). */
export const CHANGE_TRIGGER_KINDS = ['insert', 'update', 'delete'] as const;
export const TRIGGER_KINDS = [...CHANGE_TRIGGER_KINDS, 'before_insert', 'before_update'] as const;
export type TriggerKind = (typeof TRIGGER_KINDS)[number];

/**
 * Rows an INSERT or UPDATE of `table` is about to take a UNIQUE value from: an
 * `OR REPLACE` deletes them without firing delete triggers, so the statement's
 * own triggers log those deletes (see trigger-sql.ts). Empty outside a statement.
 */
export function replacedTable(table: string): string {
  return `${PREFIX}${table}_replaced_rows`;
}

export function triggerName(table: string, kind: TriggerKind): string {
  return `${PREFIX}${table}_change_log_on_${kind}`;
}

/** Change-log column holding the value of user column `column`. */
export function valueColumn(column: string): string {
  return `val_${column}`;
}

/** Quotes an SQL identifier: any name (spaces, quotes, keywords, unicode) becomes safe. */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Quotes an SQL string literal. */
export function quoteString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/** True for names HarmonyLite itself owns, which are never captured nor applied. */
export function isInternalName(name: string): boolean {
  return name.startsWith(PREFIX);
}

/** True for SQLite's own tables (sqlite_sequence, sqlite_stat1, ...). */
export function isSqliteName(name: string): boolean {
  return name.toLowerCase().startsWith('sqlite_');
}
