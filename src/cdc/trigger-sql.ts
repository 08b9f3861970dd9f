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
  replacedTable,
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

/** The staging table of rows an `OR REPLACE` may delete: only for tables with UNIQUE constraints besides the key. */
export function createReplacedSql(schema: TableSchema): string | undefined {
  if (schema.uniqueIndexes.length === 0) return undefined;
  const cols = schema.keyColumns.map((c) => quoteIdent(valueColumn(c))).join(', ');
  return `CREATE TABLE IF NOT EXISTS ${quoteIdent(replacedTable(schema.name))} (${cols})`;
}

function logInsert(schema: TableSchema, ref: 'NEW' | 'OLD', type: ChangeKind, where?: string): string {
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

type ChangeKind = 'insert' | 'update' | 'delete';

/**
 * The capture triggers. An UPDATE that changes the key first logs a delete of
 * the old key (HarmonyLite logged only NEW and left the old row on every replica).
 * Tables with UNIQUE constraints besides the key also get two BEFORE triggers:
 * `INSERT OR REPLACE` (and `UPDATE OR REPLACE`) delete the rows holding the new
 * values without firing delete triggers, so the BEFORE trigger stages the rows
 * that hold them and the AFTER trigger logs a delete for each one that is gone.
 */
export function triggerSql(schema: TableSchema): Partial<Record<TriggerKind, string>> {
  const table = quoteIdent(schema.name);
  const guard = `WHEN NOT EXISTS (SELECT 1 FROM ${quoteIdent(REPLAY_GUARD)})`;
  const keyChanged = schema.keyColumns
    .map((c) => `OLD.${quoteIdent(c)} IS NOT NEW.${quoteIdent(c)}`)
    .join(' OR ');
  const head = (kind: TriggerKind, when: 'AFTER' | 'BEFORE', event: string) =>
    `CREATE TRIGGER ${quoteIdent(triggerName(schema.name, kind))} ${when} ${event} ON ${table} ${guard}\nBEGIN\n`;
  const replaced = replacedRowsSql(schema);
  const triggers: Partial<Record<TriggerKind, string>> = {
    insert:
      head('insert', 'AFTER', 'INSERT') + (replaced?.log ?? '') + logInsert(schema, 'NEW', 'insert') + 'END',
    update:
      head('update', 'AFTER', 'UPDATE') +
      (replaced?.log ?? '') +
      logInsert(schema, 'OLD', 'delete', keyChanged) +
      logInsert(schema, 'NEW', 'update') +
      'END',
    delete: head('delete', 'AFTER', 'DELETE') + logInsert(schema, 'OLD', 'delete') + 'END',
  };
  if (replaced !== undefined) {
    triggers.before_insert = head('before_insert', 'BEFORE', 'INSERT') + replaced.stage(false) + 'END';
    triggers.before_update = head('before_update', 'BEFORE', 'UPDATE') + replaced.stage(true) + 'END';
  }
  return triggers;
}

/** The statements that stage the rows an `OR REPLACE` may delete, and log the deletes of those it did. */
function replacedRowsSql(
  schema: TableSchema,
): { stage: (update: boolean) => string; log: string } | undefined {
  if (schema.uniqueIndexes.length === 0) return undefined;
  const q = quoteIdent;
  const t = q(schema.name);
  const staging = q(replacedTable(schema.name));
  const keys = schema.keyColumns;
  const stagedKeys = keys.map((k) => q(valueColumn(k))).join(', ');
  const holds = schema.uniqueIndexes
    .map((u) => `(${u.columns.map((c) => `${q(c)} = NEW.${q(c)}`).join(' AND ')})`)
    .join(' OR ');
  const notSelf = (ref: string) => keys.map((k) => `${q(k)} IS ${ref}.${q(k)}`).join(' AND ');
  const gone = `NOT EXISTS (SELECT 1 FROM ${t} WHERE ${keys.map((k) => `${q(k)} IS s.${q(valueColumn(k))}`).join(' AND ')})`;
  const log = q(changeLogTable(schema.name));
  return {
    // An UPDATE's own row (OLD) is not another row either.
    stage: (update) =>
      `  DELETE FROM ${staging};\n` +
      `  INSERT INTO ${staging} (${stagedKeys}) SELECT ${keys.map(q).join(', ')} FROM ${t} ` +
      `WHERE (${holds}) AND NOT (${notSelf('NEW')})${update ? ` AND NOT (${notSelf('OLD')})` : ''};\n`,
    log:
      `  INSERT INTO ${log} (${stagedKeys}, type, created_at, state) SELECT ${keys.map((k) => `s.${q(valueColumn(k))}`).join(', ')}, 'delete', ${NOW_MS}, 0 FROM ${staging} AS s WHERE ${gone};\n` +
      // Their ids are the log's newest (INTEGER PRIMARY KEY: max + 1 each), in order.
      `  INSERT INTO ${q(GLOBAL_LOG)} (change_table_id, table_name) SELECT id, ${quoteString(schema.name)} FROM ${log} ` +
      `WHERE id > (SELECT max(id) FROM ${log}) - (SELECT count(*) FROM ${staging} AS s WHERE ${gone}) ORDER BY id;\n` +
      `  DELETE FROM ${staging};\n`,
  };
}
