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
] as const;

export function changeLogTable(table: string): string {
  return `${PREFIX}${table}_change_log`;
}

export const TRIGGER_KINDS = ['insert', 'update', 'delete'] as const;
export type TriggerKind = (typeof TRIGGER_KINDS)[number];

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
