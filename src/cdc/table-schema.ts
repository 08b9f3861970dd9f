import type { Database } from 'better-sqlite3';
import { changeLogTable, INTERNAL_TABLES, isInternalName, isSqliteName, quoteIdent } from './names.ts';
import type { TableFilter } from './table-filter.ts';
import type { KeyFold } from '../codec/row-digest.ts';

/** What capture and apply need to know about one user table. */
export interface TableSchema {
  readonly name: string;
  /** Columns that hold data (generated columns excluded), in table order. */
  readonly columns: readonly string[];
  /** Primary-key columns in key order; for a table without one, the single rowid alias. */
  readonly keyColumns: readonly string[];
  /** Set when the table has no declared primary key and is keyed by its rowid (`rowid`, `_rowid_` or `oid`). */
  readonly rowidAlias: string | undefined;
  /** UNIQUE constraints other than the primary key (expression indexes excluded). */
  readonly uniqueIndexes: readonly { readonly name: string; readonly columns: readonly string[] }[];
  /** Per key column, when any is `COLLATE NOCASE`: how key values compare (one row, one index entry, one shard). */
  readonly keyFold?: readonly KeyFold[];
}

export interface SkippedTable {
  readonly name: string;
  readonly reason: string;
}

interface XInfoRow {
  name: string;
  pk: number;
  hidden: number;
}

interface TableListRow {
  name: string;
  type: string;
  schema: string;
}

/** Reads one table's schema, or undefined when it does not exist (or is not an ordinary table). */
export function readTableSchema(db: Database, table: string): TableSchema | undefined {
  const exists = db
    .prepare(
      "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ? AND sql NOT LIKE 'CREATE VIRTUAL%'",
    )
    .get(table);
  if (exists === undefined) return undefined;
  const info = db.prepare(`PRAGMA table_xinfo(${quoteIdent(table)})`).all() as XInfoRow[];
  // hidden: 0 normal, 1 hidden (virtual tables), 2/3 generated columns; none of those can be written.
  const columns = info.filter((c) => c.hidden === 0).map((c) => c.name);
  const pk = info
    .filter((c) => c.pk > 0)
    .sort((a, b) => a.pk - b.pk)
    .map((c) => c.name);
  let rowidAlias: string | undefined;
  if (pk.length === 0) {
    const lower = new Set(columns.map((c) => c.toLowerCase()));
    rowidAlias = ['rowid', '_rowid_', 'oid'].find((a) => !lower.has(a));
    if (rowidAlias === undefined) return undefined;
  }
  const uniqueIndexes: { name: string; columns: string[] }[] = [];
  const indexes = db.prepare(`PRAGMA index_list(${quoteIdent(table)})`).all() as {
    name: string;
    unique: number;
    origin: string;
  }[];
  for (const idx of indexes) {
    if (idx.unique !== 1 || idx.origin === 'pk') continue;
    const cols = db.prepare(`PRAGMA index_info(${quoteIdent(idx.name)})`).all() as {
      cid: number;
      name: string | null;
    }[];
    if (cols.some((c) => c.cid < 0 || c.name === null)) continue; // expression index: cannot be matched by value
    uniqueIndexes.push({ name: idx.name, columns: cols.map((c) => c.name as string) });
  }
  const pkIndex = indexes.find((i) => i.origin === 'pk');
  let keyFold: KeyFold[] | undefined;
  if (pkIndex !== undefined) {
    const coll = new Map(
      (
        db.prepare(`PRAGMA index_xinfo(${quoteIdent(pkIndex.name)})`).all() as {
          name: string | null;
          coll: string | null;
        }[]
      ).map((c) => [c.name, c.coll]),
    );
    const fold = pk.map((k): KeyFold => (coll.get(k)?.toUpperCase() === 'NOCASE' ? 'nocase' : 'binary'));
    if (fold.includes('nocase')) keyFold = fold;
  }
  return {
    name: table,
    columns,
    keyColumns: rowidAlias === undefined ? pk : [rowidAlias],
    rowidAlias,
    uniqueIndexes,
    ...(keyFold === undefined ? {} : { keyFold }),
  };
}

/** Whether this connection has the module of virtual table `vtab` (module names are case-insensitive). */
function hasModule(db: Database, vtab: string): boolean {
  const sql = db.prepare('SELECT sql FROM sqlite_schema WHERE name = ?').pluck().get(vtab) as
    string | undefined;
  const module = /\bUSING\s+(["'`[]?)([^\s("'`\]]+)/i.exec(sql ?? '')?.[2];
  if (module === undefined) return false;
  return (
    db.prepare('SELECT 1 FROM pragma_module_list WHERE name = ? COLLATE NOCASE').get(module) !== undefined
  );
}

/**
 * Lists the tables to capture: ordinary tables of the main schema, except SQLite's and
 * ours, virtual tables and their shadow tables (reported as skipped), and those the
 * filter rejects (skipped silently: excluded by configuration).
 */
export function listCapturableTables(
  db: Database,
  filter: TableFilter,
): { tables: TableSchema[]; skipped: SkippedTable[] } {
  const rows = db.prepare('PRAGMA table_list').all() as TableListRow[];
  const tables: TableSchema[] = [];
  const skipped: SkippedTable[] = [];
  // SQLite reports shadow tables only for modules this connection has. For a virtual table of an
  // extension that only the application loads (sqlite-vec, spellfix1, ...), tables named
  // `<vtab>_...` are taken for its shadow tables: replicating them row by row, across shards,
  // would corrupt the virtual table on replicas.
  const foreignVtabs = rows
    .filter((r) => r.schema === 'main' && r.type === 'virtual' && !hasModule(db, r.name))
    .map((r) => r.name);
  for (const row of rows) {
    if (row.schema !== 'main' || isSqliteName(row.name) || isInternalName(row.name)) continue;
    if (row.type === 'virtual') {
      skipped.push({ name: row.name, reason: 'virtual table' });
      continue;
    }
    if (row.type === 'shadow') {
      skipped.push({ name: row.name, reason: 'shadow table of a virtual table' });
      continue;
    }
    if (row.type !== 'table') continue; // views
    const owner = foreignVtabs.find((v) => row.name.startsWith(`${v}_`));
    if (owner !== undefined) {
      skipped.push({
        name: row.name,
        reason: `taken for a shadow table of virtual table ${owner}, whose module is not loaded here`,
      });
      continue;
    }
    if (!filter.accepts(row.name)) continue;
    // A user table named `_global` would get `__harmonylite___global_change_log`, the global log
    // itself, as its change log: its triggers would fail every write the application makes.
    if ((INTERNAL_TABLES as readonly string[]).includes(changeLogTable(row.name))) {
      skipped.push({ name: row.name, reason: `its change log would be ${changeLogTable(row.name)}, ours` });
      continue;
    }
    const schema = readTableSchema(db, row.name);
    if (schema === undefined) {
      skipped.push({ name: row.name, reason: 'no primary key and no free rowid alias' });
      continue;
    }
    tables.push(schema);
  }
  tables.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return { tables, skipped };
}
