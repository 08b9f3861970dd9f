import type { Database } from 'better-sqlite3';
import { INTERNAL_COLUMNS, INTERNAL_TABLES_SQL } from './internal-tables.ts';
import {
  CAPTURED_TABLES,
  changeLogTable,
  GLOBAL_LOG,
  INDEXED_TABLES,
  INTERNAL_TABLES,
  KEPT_BY_CLEANUP,
  PARKED,
  PREFIX,
  quoteIdent as q,
  replacedTable,
  ROW_VERSIONS,
  TRIGGER_KINDS,
  triggerName,
  valueColumn,
} from './names.ts';
import { reconcileIndex } from './index-reconciler.ts';
import { RetiredNames } from './retired-names.ts';
import { columnRenames, tableRenames } from './schema-renames.ts';
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
  /** Tables and columns seen renamed or dropped by this call (`t`, `t.c`, with ` -> new` when renamed). */
  readonly retired: readonly string[];
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
  /**
   * Run inside a replicated migration's transaction, after its statements: per table,
   * the keys that were in sync with the index before them (`syncedKeys`); what the
   * statements did to those rows, and the rows of tables they created, is indexed, not
   * logged (every node runs them; see reconcileIndex).
   */
  readonly migrated?: ReadonlyMap<string, ReadonlySet<string>>;
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
  for (const [table, column, decl] of INTERNAL_COLUMNS) {
    const cols = db.prepare(`PRAGMA table_info(${q(table)})`).all() as { name: string }[];
    if (!cols.some((c) => c.name === column))
      db.exec(`ALTER TABLE ${q(table)} ADD COLUMN ${q(column)} ${decl}`);
  }
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
  const retired: string[] = [];
  const now = Date.now();
  const retiredNames = new RetiredNames(db);
  const current = new Set<string>();
  const isIndexed = db.prepare(`SELECT 1 FROM ${q(INDEXED_TABLES)} WHERE name = ?`).pluck();
  // A table renamed in place (ALTER TABLE ... RENAME TO) keeps its rows, versions and parked changes.
  const renamedTables = tableRenames(db, registry, new Set(tables.map((t) => t.name)));
  for (const [from, to] of renamedTables) {
    for (const t of [ROW_VERSIONS, PARKED])
      db.prepare(`UPDATE ${q(t)} SET tbl = ? WHERE tbl = ?`).run(to, from);
    db.prepare(`UPDATE ${q(INDEXED_TABLES)} SET name = ? WHERE name = ?`).run(to, from);
    retiredNames.retireTable(from, to, now);
    retired.push(`${from} -> ${to}`);
  }

  for (const schema of tables) {
    current.add(schema.name);
    const renamedFrom = [...renamedTables].find(([, to]) => to === schema.name)?.[0];
    const previous =
      registry.get(schema.name) ?? (renamedFrom === undefined ? undefined : registry.get(renamedFrom));
    if (previous === undefined || renamedFrom !== undefined) retiredNames.restoreTable(schema.name);
    const log = changeLogTable(schema.name);
    // New name -> old name, for the columns this table renamed since the last install.
    const renamed =
      previous === undefined
        ? new Map<string, string>()
        : columnRenames(
            previous,
            schema,
            existingTriggers.get(triggerName(renamedFrom ?? schema.name, 'insert')),
          );
    if (previous !== undefined) {
      const now_ = new Set(capturedColumns(schema));
      const was = new Set(capturedColumns(previous));
      const renamedOld = new Map([...renamed].map(([n, o]) => [o, n]));
      for (const col of was) {
        if (now_.has(col)) continue;
        const to = renamedOld.get(col) ?? null;
        retiredNames.retireColumn(schema.name, col, to, now);
        retired.push(`${schema.name}.${col}${to === null ? '' : ` -> ${to}`}`);
      }
      for (const col of now_) if (!was.has(col)) retiredNames.restoreColumn(schema.name, col);
    }
    let touched = false;
    const added: string[] = [];
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
        const old = renamed.get(col);
        // A renamed column's pending changes hold its value under the old name (the triggers SQLite
        // rewrote kept writing there): moved over as logged, not replaced by the row's current value.
        if (old !== undefined && have.has(valueColumn(old)))
          db.exec(`UPDATE ${q(log)} SET ${q(valueColumn(col))} = ${q(valueColumn(old))}`);
        else if (previous !== undefined) added.push(col);
      }
      if (added.length > 0) logAddedValues(db, schema, added);
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
    const reorder = wanted !== undefined && appTriggerIsNewer(db, schema.name);
    for (const kind of TRIGGER_KINDS) {
      const name = triggerName(schema.name, kind);
      const want = wanted?.[kind];
      if (existingTriggers.get(name) === want && !(reorder && want !== undefined)) continue;
      if (existingTriggers.has(name)) db.exec(`DROP TRIGGER ${q(name)}`);
      if (want !== undefined) db.exec(want);
      touched = true;
    }
    if (options.index !== undefined && (touched || isIndexed.get(schema.name) === undefined)) {
      const r = reconcileIndex(db, schema, {
        ...options.index,
        log: options.captureWrites,
        backfill: previous === undefined && hadRegistry && options.migrated === undefined,
        ...(options.migrated === undefined
          ? {}
          : { migrated: options.migrated.get(schema.name) ?? new Set<string>() }),
        renamed,
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
    if (!renamedTables.has(name) && !tableExists(db, name)) {
      retiredNames.retireTable(name, null, now);
      retired.push(name);
    }
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
  return { tables, skipped, changed, backfilled, indexed, escaped, retired };
}

/**
 * Columns added while capture ran: changes logged before the triggers knew them
 * carry no value for them, and may be on their way already (read by the publisher
 * before this install). Each row with such a pending change gets one more change,
 * logged after it, with the row's current values, so replicas never keep a default
 * where the origin has a value. Rows whose added columns are all NULL need none.
 */
function logAddedValues(db: Database, schema: TableSchema, added: readonly string[]): void {
  const log = q(changeLogTable(schema.name));
  const t = q(schema.name);
  const cols = capturedColumns(schema);
  const match = schema.keyColumns.map((k) => `t.${q(k)} IS l.${q(valueColumn(k))}`).join(' AND ');
  const before = (db.prepare(`SELECT coalesce(max(id), 0) FROM ${log}`).pluck().get() as number) ?? 0;
  db.prepare(
    `INSERT INTO ${log} (${cols.map((c) => q(valueColumn(c))).join(', ')}, type, created_at, state) ` +
      `SELECT ${cols.map((c) => `t.${q(c)}`).join(', ')}, 'update', ?, 0 FROM ${t} AS t ` +
      `WHERE (${added.map((c) => `t.${q(c)} IS NOT NULL`).join(' OR ')}) ` +
      `AND EXISTS (SELECT 1 FROM ${log} AS l WHERE l.state = 0 AND l.type <> 'delete' AND ${match})`,
  ).run(Date.now());
  db.prepare(
    `INSERT INTO ${q(GLOBAL_LOG)} (change_table_id, table_name) SELECT id, ? FROM ${log} WHERE id > ? ORDER BY id`,
  ).run(schema.name, before);
}

const CHANGE_LOG_SUFFIX = '_change_log';

/**
 * True when an application trigger on the table was created after one of ours. SQLite
 * fires a table's triggers newest first (each connection loads them in sqlite_schema
 * order), so ours must be the newest: they then log a statement's row before the
 * application trigger's own writes to it, in commit order. Recreated, ours take the
 * highest rowids.
 */
function appTriggerIsNewer(db: Database, table: string): boolean {
  const r = db
    .prepare(
      "SELECT max(CASE WHEN name NOT GLOB '__harmonylite__*' THEN rowid END), " +
        "min(CASE WHEN name GLOB '__harmonylite__*' THEN rowid END) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?",
    )
    .raw(true)
    .get(table) as [number | null, number | null];
  return r[0] !== null && r[1] !== null && r[0] > r[1];
}

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
