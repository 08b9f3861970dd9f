import type { Database, Statement } from 'better-sqlite3';
import type { ChangeType } from '../codec/change-record.ts';
import { exactText, toWire, type CapturedValue, type SqlValue, type WireValue } from '../codec/sql-value.ts';
import { CAPTURED_TABLES, changeLogTable, GLOBAL_LOG, quoteIdent as q, valueColumn } from '../cdc/names.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import { capturedColumns } from '../cdc/trigger-sql.ts';
import { recordLayout, type RecordLayout } from '../codec/change-record-writer.ts';

/** One captured change, read from the change logs in global (commit) order. */
export interface PendingChange {
  readonly globalId: number;
  readonly table: string;
  readonly changeId: number;
  readonly type: ChangeType;
  readonly createdAt: number;
  /** Column name to value in wire form (`toWire`), built when first read. */
  readonly row: Record<string, WireValue>;
  /** Primary-key values in key order (the rowid for tables keyed by it; NOCASE text folded): the routing key; integers as bigint. */
  readonly key: readonly SqlValue[];
  /**
   * The values as read (safe integers) in `layout` column order, from index `valuesFrom` of this
   * array; TEXT that is not valid UTF-8 as its bytes (`SqlTextBytes`).
   */
  readonly values: readonly CapturedValue[];
  readonly valuesFrom: number;
  /** The table's encoded record parts, for `ChangeRecordWriter` (the publisher writes records from `values`). */
  readonly layout: RecordLayout;
}

/** A scanned change; its `row` object is built only if asked for (the publisher does not). */
class ScannedChange implements PendingChange {
  #row: Record<string, WireValue> | undefined;
  constructor(
    readonly globalId: number,
    readonly table: string,
    readonly changeId: number,
    readonly type: ChangeType,
    readonly createdAt: number,
    readonly key: readonly SqlValue[],
    readonly values: readonly CapturedValue[],
    readonly valuesFrom: number,
    readonly layout: RecordLayout,
    readonly columns: readonly string[],
  ) {}

  get row(): Record<string, WireValue> {
    if (this.#row === undefined) {
      const row: Record<string, WireValue> = {};
      for (let i = 0; i < this.columns.length; i++)
        row[this.columns[i]!] = toWire(this.values[this.valuesFrom + i]!);
      this.#row = row;
    }
    return this.#row;
  }
}

export interface ScanResult {
  readonly changes: PendingChange[];
  /** Global-log ids of changes whose table is no longer captured (dropped or excluded): nothing to publish. */
  readonly orphans: number[];
  /** The last global id read, to continue from. */
  readonly lastGlobalId: number;
}

/** Where the values start in a window row (after global id, change id, type, created_at). */
const VALUES_FROM = 4;

interface TableReader {
  readonly columns: readonly string[];
  readonly layout: RecordLayout;
  readonly keyIndexes: readonly number[];
  /** Key columns compared `NOCASE`: routed by their folded value, so one row keeps one shard. */
  readonly nocaseKeys: readonly boolean[] | undefined;
  /** (firstGlobalId, lastGlobalId, table): the change-log rows the global log points at in that window. */
  readonly window: Statement;
  /** (change id): every value column as its bytes; read only for TEXT holding U+FFFD (rare). */
  readonly bytes: () => Statement;
}

/**
 * Reads pending changes in global-log order on a read-only connection. Rows of
 * one table are fetched with one query per pass, not one query per row, and
 * exactly the rows the global log points at: a range over change-log ids would
 * also read the published rows between two pending ones (other shards publish
 * ahead of a stuck one), up to seconds per pass. A window of one table (the
 * usual case) needs only that table's query, which returns the global ids too;
 * windows of several tables, or with orphans, read the global entries first.
 * Values are read with safe integers, so 64-bit integers stay exact.
 */
export class ChangelogScanner {
  readonly #db: Database;
  readonly #global: Statement;
  /** (first table name, last table name, last global id, count) of the next window. */
  readonly #span: Statement;
  readonly #count: Statement;
  readonly #registry: Statement;
  #readers = new Map<string, TableReader | null>();
  readonly #schemaVersion: Statement;
  /** The schema version the cached readers were built at. */
  #readersAt: number | undefined;
  readonly #scanInSnapshot: (afterGlobalId: number, limit: number) => ScanResult;

  constructor(db: Database) {
    this.#db = db;
    this.#global = db
      .prepare(
        `SELECT id, change_table_id, table_name FROM ${q(GLOBAL_LOG)} WHERE id > ? ORDER BY id LIMIT ?`,
      )
      .raw(true);
    this.#span = db
      .prepare(
        `SELECT min(table_name), max(table_name), max(id), count(*) FROM ` +
          `(SELECT id, table_name FROM ${q(GLOBAL_LOG)} WHERE id > ? ORDER BY id LIMIT ?)`,
      )
      .raw(true);
    this.#count = db.prepare(`SELECT count(*) FROM ${q(GLOBAL_LOG)}`).pluck();
    this.#registry = db.prepare(`SELECT schema FROM ${q(CAPTURED_TABLES)} WHERE name = ?`).pluck();
    this.#schemaVersion = db.prepare('PRAGMA schema_version').pluck();
    this.#scanInSnapshot = db.transaction((after: number, limit: number) => this.#scanNow(after, limit));
  }

  /** Forget cached table layouts (after a schema change). */
  invalidate(): void {
    this.#readers = new Map();
  }

  /** Changes still to publish. */
  countPending(): number {
    return this.#count.get() as number;
  }

  #reader(table: string): TableReader | null {
    let r = this.#readers.get(table);
    if (r !== undefined) return r;
    const json = this.#registry.get(table) as string | undefined;
    if (json === undefined) {
      r = null;
    } else {
      const schema = JSON.parse(json) as TableSchema;
      const columns = capturedColumns(schema);
      const select = [
        'g.id',
        'c.id',
        'c.type',
        'c.created_at',
        ...columns.map((c) => `c.${q(valueColumn(c))}`),
      ].join(', ');
      const window = this.#db
        .prepare(
          `SELECT ${select} FROM ${q(GLOBAL_LOG)} AS g JOIN ${q(changeLogTable(table))} AS c ON c.id = g.change_table_id ` +
            `WHERE g.id BETWEEN ? AND ? AND g.table_name = ? ORDER BY g.id`,
        )
        .raw(true)
        .safeIntegers(true);
      let bytes: Statement | undefined;
      r = {
        columns,
        layout: recordLayout(table, columns),
        keyIndexes: schema.keyColumns.map((k) => columns.indexOf(k)),
        nocaseKeys: schema.keyFold?.map((f) => f === 'nocase'),
        window,
        bytes: () =>
          (bytes ??= this.#db
            .prepare(
              `SELECT ${columns.map((c) => `CAST(${q(valueColumn(c))} AS BLOB)`).join(', ')} FROM ${q(changeLogTable(table))} WHERE id = ?`,
            )
            .raw(true)),
      };
    }
    this.#readers.set(table, r);
    return r;
  }

  /**
   * Up to `limit` changes with a global id greater than `afterGlobalId`, in global order.
   * One read snapshot, checked against the schema version: rows logged by triggers that a
   * schema change just reinstalled are never read with the columns of the old layout, however
   * late the schema-change notice (invalidate) comes.
   */
  scan(afterGlobalId: number, limit: number): ScanResult {
    return this.#scanInSnapshot(afterGlobalId, limit);
  }

  #scanNow(afterGlobalId: number, limit: number): ScanResult {
    const version = this.#schemaVersion.get() as number;
    if (version !== this.#readersAt) {
      this.#readers = new Map();
      this.#readersAt = version;
    }
    const [firstTable, lastTable, last, count] = this.#span.get(afterGlobalId, limit) as [
      string | null,
      string | null,
      number | null,
      number,
    ];
    if (count === 0 || last === null) return { changes: [], orphans: [], lastGlobalId: afterGlobalId };
    // One table in the window (the usual case): its query alone, which also returns the global ids.
    if (firstTable !== null && firstTable === lastTable) {
      const reader = this.#reader(firstTable);
      if (reader !== null) {
        const rows = reader.window.all(afterGlobalId + 1, last, firstTable) as unknown[][];
        // Fewer rows than global entries: some point at no change-log row (orphans): the general path.
        if (rows.length === count)
          return {
            changes: rows.map((raw) => change(firstTable, reader, raw)),
            orphans: [],
            lastGlobalId: last,
          };
      }
    }
    return this.#scanMixed(afterGlobalId, limit);
  }

  /** The general path: global entries first, then each table's rows, matched by change-log id. */
  #scanMixed(afterGlobalId: number, limit: number): ScanResult {
    const globals = this.#global.all(afterGlobalId, limit) as [number, number, string][];
    if (globals.length === 0) return { changes: [], orphans: [], lastGlobalId: afterGlobalId };
    const first = globals[0]![0];
    const last = globals[globals.length - 1]![0];
    const rowsByTable = new Map<string, Map<number, unknown[]>>();
    for (const [, , table] of globals) {
      if (rowsByTable.has(table)) continue;
      const reader = this.#reader(table);
      if (reader === null) continue;
      const rows = new Map<number, unknown[]>();
      for (const row of reader.window.all(first, last, table) as unknown[][])
        rows.set(Number(row[1] as bigint), row);
      rowsByTable.set(table, rows);
    }
    const changes: PendingChange[] = [];
    const orphans: number[] = [];
    for (const [globalId, changeId, table] of globals) {
      const reader = this.#readers.get(table);
      const raw = rowsByTable.get(table)?.get(changeId);
      if (reader == null || raw === undefined) {
        orphans.push(globalId);
        continue;
      }
      changes.push(change(table, reader, raw));
    }
    return { changes, orphans, lastGlobalId: last };
  }
}

/** A change from a window row: (global id, change id, type, created_at, values...), integers as bigint. */
function change(table: string, reader: TableReader, raw: unknown[]): PendingChange {
  const key = reader.keyIndexes.map((i, k) => {
    const v = raw[i + VALUES_FROM] as SqlValue;
    // SQLite's NOCASE folds ASCII letters only.
    return reader.nocaseKeys?.[k] === true && typeof v === 'string'
      ? v.replace(/[A-Z]+/g, (m) => m.toLowerCase())
      : v;
  });
  // better-sqlite3 decodes TEXT lossily (a bad byte becomes U+FFFD): such values are read again as bytes.
  let bytes: unknown[] | undefined;
  for (let i = VALUES_FROM; i < raw.length; i++) {
    const v = raw[i];
    if (typeof v === 'string' && v.includes('\uFFFD'))
      raw[i] = exactText(v, () => {
        bytes ??= reader.bytes().get(raw[1]) as unknown[];
        return bytes[i - VALUES_FROM] as Uint8Array;
      });
  }
  return new ScannedChange(
    Number(raw[0] as bigint),
    table,
    Number(raw[1] as bigint),
    raw[2] as ChangeType,
    Number(raw[3] as bigint),
    key,
    raw as CapturedValue[],
    VALUES_FROM,
    reader.layout,
    reader.columns,
  );
}
