/**
 * SQL of the change-log tables and capture triggers. Pure: no I/O.
 *
 * The triggers must run in any SQLite client with default settings (invariant 7),
 * down to the stock sqlite3 3.40 shell: no `unixepoch('subsec')`, no function
 * list lookups, no `trusted_schema`. The replay guard (invariant 6) is an
 * `EXISTS` on a table that is empty outside the applier's own transaction.
 */
import {
  changeLogTable,
  GLOBAL_LOG,
  quoteIdent,
  quoteString,
  REPLAY_GUARD,
  triggerName,
  valueColumn,
  type TriggerKind,
} from './names.ts';
import type { TableSchema } from './table-schema.ts';

/** Milliseconds since the epoch, the seed's `created_at`, portable to old SQLite versions. */
const NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/** The user-table columns a change log holds: data columns, plus the rowid for tables keyed by it. */
export function capturedColumns(schema: TableSchema): string[] {
  return schema.rowidAlias === undefined ? [...schema.columns] : [schema.rowidAlias, ...schema.columns];
}

/** Change-log columns have no declared type, so every value keeps its exact storage class. */
export function createChangeLogSql(schema: TableSchema): string {
  const cols = capturedColumns(schema).map((c) => `${quoteIdent(valueColumn(c))}`);
  return (
    `CREATE TABLE IF NOT EXISTS ${quoteIdent(changeLogTable(schema.name))} (` +
    [
      'id INTEGER PRIMARY KEY',
      ...cols,
      'type TEXT NOT NULL',
      'created_at INTEGER NOT NULL',
      'state INTEGER NOT NULL DEFAULT 0',
    ].join(', ') +
    ')'
  );
}

function logInsert(schema: TableSchema, ref: 'NEW' | 'OLD', type: TriggerKind, where?: string): string {
  const cols = capturedColumns(schema);
  const target = cols.map((c) => quoteIdent(valueColumn(c))).join(', ');
  const values = cols.map((c) => `${ref}.${quoteIdent(c)}`).join(', ');
  const log = quoteIdent(changeLogTable(schema.name));
  const global = `INSERT INTO ${quoteIdent(GLOBAL_LOG)} (change_table_id, table_name)`;
  if (where === undefined) {
    return (
      `  INSERT INTO ${log} (${target}, type, created_at, state) VALUES (${values}, '${type}', ${NOW_MS}, 0);\n` +
      `  ${global} VALUES (last_insert_rowid(), ${quoteString(schema.name)});\n`
    );
  }
  return (
    `  INSERT INTO ${log} (${target}, type, created_at, state) SELECT ${values}, '${type}', ${NOW_MS}, 0 WHERE ${where};\n` +
    `  ${global} SELECT last_insert_rowid(), ${quoteString(schema.name)} WHERE ${where};\n`
  );
}

/**
 * The three AFTER triggers. An UPDATE that changes the key first logs a delete of
 * the old key (HarmonyLite logged only NEW and left the old row on every replica).
 */
export function triggerSql(schema: TableSchema): Record<TriggerKind, string> {
  const table = quoteIdent(schema.name);
  const guard = `WHEN NOT EXISTS (SELECT 1 FROM ${quoteIdent(REPLAY_GUARD)})`;
  const keyChanged = schema.keyColumns
    .map((c) => `OLD.${quoteIdent(c)} IS NOT NEW.${quoteIdent(c)}`)
    .join(' OR ');
  const head = (kind: TriggerKind) =>
    `CREATE TRIGGER ${quoteIdent(triggerName(schema.name, kind))} AFTER ${kind.toUpperCase()} ON ${table} ${guard}\nBEGIN\n`;
  return {
    insert: head('insert') + logInsert(schema, 'NEW', 'insert') + 'END',
    update:
      head('update') +
      logInsert(schema, 'OLD', 'delete', keyChanged) +
      logInsert(schema, 'NEW', 'update') +
      'END',
    delete: head('delete') + logInsert(schema, 'OLD', 'delete') + 'END',
  };
}
