import type { Database } from 'better-sqlite3';
import { INTERNAL_TABLES_SQL } from './internal-tables.ts';
import {
  CAPTURED_TABLES,
  changeLogTable,
  GLOBAL_LOG,
  INDEXED_TABLES,
  INTERNAL_TABLES,
  KEPT_BY_CLEANUP,
  PREFIX,
  quoteIdent as q,
  replacedTable,
  TRIGGER_KINDS,
  triggerName,
  valueColumn,
} from './names.ts';
import { reconcileIndex } from './index-reconciler.ts';
import type { RowDigest } from '../codec/row-digest.ts';
import type { TableFilter } from './table-filter.ts';
import { listCapturableTables, type SkippedTable, type TableSchema } from './table-schema.ts';
import { capturedColumns, createChangeLogSql, createReplacedSql, triggerSql } from './trigger-sql.ts';

export interface CaptureState {
  readonly tables: readonly TableSchema[];
  readonly skipped: readonly SkippedTable[];
  /** Tables whose capture was created, upgraded or removed by this call. */
  readonly changed: readonly string[];
  /** Rows logged for tables that appeared while capture was installed (created while running or while down). */
  readonly backfilled: number;
  /** Rows the replicated-state index was built over (first start), without logging them. */
  readonly indexed: number;
  /** Writes found that escaped capture (made while the triggers were absent), now logged. */
  readonly escaped: number;
}

export interface InstallOptions {
  /** false on a read replica (`publish = false`): no triggers, so nothing accumulates unpublished. */
  readonly captureWrites: boolean;
  /**
   * Keeps the replicated-state index: tables whose capture is created or changed are
   * reconciled with it (invariant 9). Without it the index is left alone.
   */
  readonly index?: {
    readonly digest: RowDigest;
    readonly nodeId: number;
    readonly progress?: (table: string, rows: number) => void;
  };
}

/**
 * Installs or brings up to date change capture, idempotently, in one
 * transaction: internal tables, one change log and three triggers per table.
 * Run at start and whenever the schema changes; it rewrites nothing that is
 * already right, so it does not change the schema (and wake itself) again.
 */
export function installCapture(db: Database, filter: TableFilter, options: InstallOptions): CaptureState {
  return db.transaction(() => installInTransaction(db, filter, options)).immediate();
}

function installInTransaction(db: Database, filter: TableFilter, options: InstallOptions): CaptureState {
  const hadRegistry = tableExists(db, CAPTURED_TABLES);
  for (const sql of INTERNAL_TABLES_SQL) db.exec(sql);
  const registry = new Map(
    (
      db.prepare(`SELECT name, schema FROM ${q(CAPTURED_TABLES)}`).all() as { name: string; schema: string }[]
    ).map((r) => [r.name, JSON.parse(r.schema) as TableSchema]),
  );
  const existingTriggers = new Map(
    (
      db.prepare("SELECT name, sql FROM sqlite_schema WHERE type = 'trigger'").all() as {
        name: string;
        sql: string;
      }[]
    ).map((r) => [r.name, r.sql]),
  );
  const { tables, skipped } = listCapturableTables(db, filter);
  const changed: string[] = [];
  let backfilled = 0;
  let indexed = 0;
  let escaped = 0;
  const current = new Set<string>();
  const isIndexed = db.prepare(`SELECT 1 FROM ${q(INDEXED_TABLES)} WHERE name = ?`).pluck();

  for (const schema of tables) {
    current.add(schema.name);
    const previous = registry.get(schema.name);
    const log = changeLogTable(schema.name);
    let touched = false;
    if (!tableExists(db, log)) {
      db.exec(createChangeLogSql(schema));
      touched = true;
    } else {
      const have = new Set(
        (db.prepare(`PRAGMA table_info(${q(log)})`).all() as { name: string }[]).map((c) => c.name),
      );
      for (const col of capturedColumns(schema)) {
        if (have.has(valueColumn(col))) continue;
        db.exec(`ALTER TABLE ${q(log)} ADD COLUMN ${q(valueColumn(col))}`);
        touched = true;
        if (previous !== undefined) fillPendingColumn(db, schema, col);
      }
    }
    const staging = createReplacedSql(schema);
    const hasStaging = tableExists(db, replacedTable(schema.name));
    if (options.captureWrites && staging !== undefined && !hasStaging) {
      db.exec(staging);
      touched = true;
    } else if ((staging === undefined || !options.captureWrites) && hasStaging) {
      db.exec(`DROP TABLE ${q(replacedTable(schema.name))}`);
      touched = true;
    }
    const wanted = options.captureWrites ? triggerSql(schema) : undefined;
    for (const kind of TRIGGER_KINDS) {
      const name = triggerName(schema.name, kind);
      const want = wanted?.[kind];
      if (existingTriggers.get(name) === want) continue;
      if (existingTriggers.has(name)) db.exec(`DROP TRIGGER ${q(name)}`);
      if (want !== undefined) db.exec(want);
      touched = true;
    }
    if (options.index !== undefined && (touched || isIndexed.get(schema.name) === undefined)) {
      const r = reconcileIndex(db, schema, {
        ...options.index,
        log: options.captureWrites,
        backfill: previous === undefined && hadRegistry,
      });
      backfilled += r.backfilled;
      indexed += r.indexed;
      escaped += r.escaped;
    }
    const json = JSON.stringify(schema);
    if (previous === undefined || JSON.stringify(previous) !== json) {
      db.prepare(
        `INSERT INTO ${q(CAPTURED_TABLES)} (name, schema) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET schema = excluded.schema`,
      ).run(schema.name, json);
      touched = true;
    }
    if (touched) changed.push(schema.name);
  }

  // Tables dropped, or now excluded: remove their triggers and registry entry (nothing is applied to them either).
  for (const name of registry.keys()) {
    if (current.has(name)) continue;
    for (const kind of TRIGGER_KINDS) db.exec(`DROP TRIGGER IF EXISTS ${q(triggerName(name, kind))}`);
    db.exec(`DROP TABLE IF EXISTS ${q(replacedTable(name))}`);
    db.prepare(`DELETE FROM ${q(CAPTURED_TABLES)} WHERE name = ?`).run(name);
    changed.push(name);
  }
  // Change logs of tables no longer captured: kept while the global log still points into them (a batch
  // in flight marks its rows published there), dropped by the first install after that. Sweeping by
  // name, not by registry entry, so a log kept once is not left behind forever; only tables shaped
  // like a change log, so a start never drops a user's table that merely sits in our namespace.
  const pendingOf = db.prepare(`SELECT 1 FROM ${q(GLOBAL_LOG)} WHERE table_name = ? LIMIT 1`);
  for (const log of listChangeLogs(db)) {
    const name = log.slice(PREFIX.length, -CHANGE_LOG_SUFFIX.length);
    if (current.has(name) || pendingOf.get(name) !== undefined || !isChangeLogShaped(db, log)) continue;
    db.exec(`DROP TABLE ${q(log)}`);
    if (!changed.includes(name)) changed.push(name);
  }
  return { tables, skipped, changed, backfilled, indexed, escaped };
}

/**
 * A column added while capture ran: pending changes logged before the triggers
 * knew it get the row's current value, so replicas do not receive a default in
 * its place. Later changes of the same row carry their own values, so the
 * final state is exact.
 */
function fillPendingColumn(db: Database, schema: TableSchema, column: string): void {
  const log = q(changeLogTable(schema.name));
  const match = schema.keyColumns.map((k) => `t.${q(k)} IS ${log}.${q(valueColumn(k))}`).join(' AND ');
  db.exec(
    `UPDATE ${log} SET ${q(valueColumn(column))} = (SELECT t.${q(column)} FROM ${q(schema.name)} AS t WHERE ${match}) ` +
      `WHERE state = 0 AND type <> 'delete'`,
  );
}

const CHANGE_LOG_SUFFIX = '_change_log';

function tableExists(db: Database, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

/**
 * Per-table change logs present in the database (`__harmonylite__<table>_change_log`),
 * our internal tables excluded. GLOB, not LIKE: `_` is literal, so only our
 * namespace matches (`xxharmonylitexx_change_log` is a user table).
 */
function listChangeLogs(db: Database): string[] {
  const internal = new Set<string>(INTERNAL_TABLES);
  return (
    db
      .prepare(
        `SELECT name FROM sqlite_schema WHERE type = 'table' AND name GLOB '${PREFIX}*${CHANGE_LOG_SUFFIX}'`,
      )
      .pluck()
      .all() as string[]
  ).filter((n) => !internal.has(n));
}

function isChangeLogShaped(db: Database, table: string): boolean {
  const cols = new Set(
    (db.prepare(`PRAGMA table_info(${q(table)})`).all() as { name: string }[]).map((c) => c.name),
  );
  return ['id', 'type', 'created_at', 'state'].every((c) => cols.has(c));
}

/**
 * `-cleanup`: drops every trigger and table of ours and nothing else, except
 * the replicated-state index: the next start compares the tables with it and
 * publishes what was written while capture was absent (invariant 9). GLOB, not
 * LIKE: `_` is literal, so `xxharmonylitexx_data` is never touched.
 */
export function removeCapture(db: Database): { triggers: number; tables: number } {
  return db
    .transaction(() => {
      const triggers = db
        .prepare(
          "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND name GLOB '__harmonylite__*_change_log_on_*'",
        )
        .pluck()
        .all() as string[];
      for (const t of triggers) db.exec(`DROP TRIGGER IF EXISTS ${q(t)}`);
      const logs = listChangeLogs(db);
      const staging = logs
        .map((log) => replacedTable(log.slice(PREFIX.length, -CHANGE_LOG_SUFFIX.length)))
        .filter((n) => tableExists(db, n));
      const tables = [
        ...logs,
        ...staging,
        ...INTERNAL_TABLES.filter((n) => tableExists(db, n) && !KEPT_BY_CLEANUP.includes(n)),
      ];
      for (const t of tables) db.exec(`DROP TABLE ${q(t)}`);
      return { triggers: triggers.length, tables: tables.length };
    })
    .immediate();
}
