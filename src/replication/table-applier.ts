import type { Database, Statement } from 'better-sqlite3';
import { quoteIdent as q } from '../cdc/names.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import { capturedColumns } from '../cdc/trigger-sql.ts';
import { MalformedMessageError } from '../codec/change-record.ts';
import { hashLayout, type HashLayout } from '../codec/row-digest.ts';
import {
  fromWire,
  hasTextBytes,
  placeholder,
  SqlTextBytes,
  type SqlValue,
  type WireValue,
} from '../codec/sql-value.ts';
import { errorMessage } from '../error-message.ts';

/** A key value: as bound, or TEXT carried as its bytes (not valid UTF-8), bound through `CAST(? AS TEXT)`. */
export type KeyValue = SqlValue | SqlTextBytes;

/** A change that cannot apply until this node's schema catches up: its shard waits, in order (invariant 5). */
export class SchemaLagError extends Error {
  override readonly name = 'SchemaLagError';
  readonly code = 'ERR_SCHEMA_LAG';
}

/**
 * SQLite errors that mean "this node's schema is behind the sender's": a table or
 * column that is not here (yet). Constraints are not: see isRefusal.
 */
export function isSchemaLag(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  const msg = (err as Error).message ?? '';
  return code === 'SQLITE_ERROR' && /no such (table|column)|has no column named/.test(msg);
}

/** Constraint codes by which this node's database refuses a change its origin took. */
const REFUSALS: ReadonlySet<string> = new Set([
  'SQLITE_CONSTRAINT_TRIGGER', // RAISE(ABORT | FAIL) in an application trigger
  'SQLITE_CONSTRAINT_CHECK',
  'SQLITE_CONSTRAINT_NOTNULL',
  'SQLITE_CONSTRAINT_FOREIGNKEY',
  'SQLITE_CONSTRAINT_DATATYPE',
  'SQLITE_MISMATCH',
]);

/**
 * A change refused by an application trigger or a constraint of this node: waiting
 * cannot make it apply (no schema is missing), so it is logged as a conflict and the
 * shard goes on (invariant 5).
 */
export function isRefusal(err: unknown): boolean {
  return REFUSALS.has((err as { code?: string }).code ?? '');
}

/** The result of writing a row: its values as stored, or the keys of the rows holding a UNIQUE value it needs. */
export type WriteOutcome =
  | { readonly written: readonly SqlValue[]; readonly replaced?: true }
  | { readonly holders: readonly (readonly SqlValue[])[] };

/**
 * Reads and writes one table's rows by key, for the applier (which decides,
 * by version, what to write: see BatchApplier). Writes are upserts on the key
 * (`ON CONFLICT (key) DO UPDATE` keeps the row in place, unlike HarmonyLite's
 * INSERT OR REPLACE) that also set the key columns, so a key changed only in
 * case under `COLLATE NOCASE` arrives as written; tables keyed by the rowid, and
 * keys holding NULL (which never conflict), are written by UPDATE, then INSERT
 * when no row matched. Every statement returns the row as stored, in
 * `columns` order, read with safe integers. Statements are prepared once per
 * column set.
 *
 * A write that collides on another UNIQUE constraint is not resolved here: the
 * rows holding the value are returned (full-column indexes are matched by
 * value). Partial and expression indexes cannot be matched by value; a
 * collision on one is resolved by SQLite's REPLACE, as HarmonyLite did.
 */
export class TableApplier {
  readonly #db: Database;
  readonly schema: TableSchema;
  /** The table's captured columns (the rowid first for tables keyed by it): the order of every row read or written. */
  readonly columns: readonly string[];
  readonly layout: HashLayout;
  readonly #columnSet: Set<string>;
  readonly #keyIndexes: readonly number[];
  readonly #writes = new Map<string, WriteStatements>();
  readonly #read: Statement;
  readonly #delete: Statement;
  readonly #holders: readonly HolderQuery[];
  readonly #returning: string;

  constructor(db: Database, schema: TableSchema) {
    this.#db = db;
    this.schema = schema;
    this.columns = capturedColumns(schema);
    this.layout = hashLayout(this.columns);
    this.#columnSet = new Set(this.columns);
    this.#keyIndexes = schema.keyColumns.map((k) => this.columns.indexOf(k));
    this.#returning = `RETURNING ${this.columns.map(q).join(', ')}`;
    const keyIs = schema.keyColumns.map((k) => `${q(k)} IS ?`).join(' AND ');
    this.#read = this.#prepare(
      `SELECT ${this.columns.map(q).join(', ')} FROM ${q(schema.name)} WHERE ${keyIs}`,
    ).raw(true);
    this.#read.safeIntegers(true);
    this.#delete = this.#prepare(`DELETE FROM ${q(schema.name)} WHERE ${keyIs}`);
    this.#holders = uniqueHolderQueries(db, schema, keyIs);
  }

  /** True when the table has this captured column. */
  hasColumn(name: string): boolean {
    return this.#columnSet.has(name);
  }

  /** True when the table has UNIQUE constraints besides its key: writes may displace rows. */
  get hasUnique(): boolean {
    return this.#holders.length > 0;
  }

  /** The key of a change's row; every change must carry it: without it no node can tell which row it means. */
  keyOf(row: Record<string, WireValue>): KeyValue[] {
    return this.schema.keyColumns.map((k) => {
      if (!Object.hasOwn(row, k)) {
        throw new MalformedMessageError(
          `table ${this.schema.name}: change has no value for key column ${JSON.stringify(k)}`,
        );
      }
      const v = row[k];
      return v instanceof SqlTextBytes ? v : fromWire(v);
    });
  }

  /** The key of a row read from this table. */
  keyOfValues(values: readonly SqlValue[]): SqlValue[] {
    return this.#keyIndexes.map((i) => values[i] as SqlValue);
  }

  /** A change's values in `columns` order (NULL for columns it does not carry): what the row holds once it is written. */
  valuesOf(row: Record<string, WireValue>): KeyValue[] {
    return this.columns.map((c) => {
      if (!Object.hasOwn(row, c)) return null;
      const v = row[c];
      return v instanceof SqlTextBytes ? v : fromWire(v);
    });
  }

  /** The row with this key, in `columns` order, or undefined. */
  read(key: readonly KeyValue[]): SqlValue[] | undefined {
    if (!key.some((v) => v instanceof SqlTextBytes)) return this.#read.get(key) as SqlValue[] | undefined;
    const stmt = this.#prepare(
      `SELECT ${this.columns.map(q).join(', ')} FROM ${q(this.schema.name)} WHERE ${this.#keyIs(key)}`,
    ).raw(true);
    stmt.safeIntegers(true);
    return stmt.get(key.map(fromWire)) as SqlValue[] | undefined;
  }

  /** Deletes the row with this key; true when there was one. */
  remove(key: readonly KeyValue[]): boolean {
    if (!key.some((v) => v instanceof SqlTextBytes)) return this.#delete.run(key).changes > 0;
    return (
      this.#prepare(`DELETE FROM ${q(this.schema.name)} WHERE ${this.#keyIs(key)}`).run(key.map(fromWire))
        .changes > 0
    );
  }

  /** `k1 IS ? AND ...`, TEXT carried as bytes compared as TEXT. */
  #keyIs(key: readonly KeyValue[]): string {
    return this.schema.keyColumns.map((k, i) => `${q(k)} IS ${placeholder(key[i])}`).join(' AND ');
  }

  #prepare(sql: string): Statement {
    try {
      return this.#db.prepare(sql);
    } catch (err) {
      if (isSchemaLag(err))
        throw new SchemaLagError(`table ${this.schema.name}: ${errorMessage(err)}`, { cause: err });
      throw err;
    }
  }

  /**
   * The write statements of a change carrying exactly `cols`, cached per column set; a change
   * holding TEXT carried as bytes (rare) gets its own, each such value bound through its placeholder.
   */
  #statements(cols: readonly string[], row: Record<string, WireValue>): WriteStatements {
    const exact = hasTextBytes(row);
    const sig = cols.join('\u0000');
    let s = exact ? undefined : this.#writes.get(sig);
    if (s !== undefined) return s;
    for (const c of cols) {
      if (!this.#columnSet.has(c))
        throw new SchemaLagError(`table ${this.schema.name} has no column ${JSON.stringify(c)}`);
    }
    const t = q(this.schema.name);
    const list = cols.map(q).join(', ');
    const marks = cols.map((c) => placeholder(row[c]));
    const params = marks.join(', ');
    const insertSql = `INSERT INTO ${t} (${list}) VALUES (${params}) ${this.#returning}`;
    const keyIs = this.schema.keyColumns.map((k) => `${q(k)} IS ${placeholder(row[k])}`).join(' AND ');
    const reader = (sql: string): Statement => {
      const stmt = this.#prepare(sql).raw(true);
      stmt.safeIntegers(true);
      return stmt;
    };
    s = {
      // A rowid-keyed table has no conflict target: its writes take the update-then-insert path.
      upsert: reader(
        this.schema.rowidAlias === undefined
          ? `INSERT INTO ${t} (${list}) VALUES (${params}) ON CONFLICT (${this.schema.keyColumns.map(q).join(', ')}) ` +
              `DO UPDATE SET ${cols.map((c) => `${q(c)} = excluded.${q(c)}`).join(', ')} ${this.#returning}`
          : insertSql,
      ),
      update: reader(
        `UPDATE ${t} SET ${cols.map((c, i) => `${q(c)} = ${marks[i]}`).join(', ')} WHERE ${keyIs} ${this.#returning}`,
      ),
      insert: reader(insertSql),
      insertNew: reader(
        `INSERT INTO ${t} (${list}) VALUES (${params}) ON CONFLICT DO NOTHING ${this.#returning}`,
      ),
      replace: reader(`INSERT OR REPLACE INTO ${t} (${list}) VALUES (${params}) ${this.#returning}`),
    };
    if (!exact) this.#writes.set(sig, s);
    return s;
  }

  /**
   * Inserts a change's row if no row holds its key or any of its UNIQUE values: the row as
   * stored, or undefined when something was in the way (nothing written; `write` decides).
   * One statement where `read` then `write` take three for a new key. A key holding NULL
   * never conflicts, so it is never inserted here.
   */
  insertNew(row: Record<string, WireValue>): SqlValue[] | undefined {
    const key = this.keyOf(row);
    for (const v of key) if (v === null) return undefined;
    const cols = Object.keys(row);
    const values = this.#values(cols, row);
    try {
      return this.#statements(cols, row).insertNew.get(values) as SqlValue[] | undefined;
    } catch (err) {
      if (err instanceof SchemaLagError || !isSchemaLag(err)) throw err;
      throw new SchemaLagError(`table ${this.schema.name}: ${errorMessage(err)}`, { cause: err });
    }
  }

  #values(cols: readonly string[], row: Record<string, WireValue>): SqlValue[] {
    const values: SqlValue[] = new Array(cols.length);
    for (let i = 0; i < cols.length; i++) values[i] = fromWire(row[cols[i]!]);
    return values;
  }

  /** Writes a change's row (insert or update by key); SchemaLagError when this node's schema cannot take it yet. */
  write(row: Record<string, WireValue>): WriteOutcome {
    const key = this.keyOf(row).map(fromWire);
    const cols = Object.keys(row);
    const values = this.#values(cols, row);
    try {
      const s = this.#statements(cols, row);
      try {
        if (this.schema.rowidAlias === undefined && !key.includes(null))
          return { written: stored(s.upsert.get(values)) };
        const updated = s.update.get([...values, ...key]) as SqlValue[] | undefined;
        return { written: updated ?? stored(s.insert.get(values)) };
      } catch (err) {
        if ((err as { code?: string }).code !== 'SQLITE_CONSTRAINT_UNIQUE') throw err;
      }
      const holders = this.#findHolders(row, key);
      if (holders.length > 0) return { holders };
      // Only a partial, expression or collated index can still collide: SQLite's REPLACE resolves it.
      return { written: s.replace.get(values) as SqlValue[], replaced: true };
    } catch (err) {
      if (err instanceof SchemaLagError || !isSchemaLag(err)) throw err;
      throw new SchemaLagError(`table ${this.schema.name}: ${errorMessage(err)}`, { cause: err });
    }
  }

  /** Keys of the rows (other than this change's) holding one of the UNIQUE values the change writes. */
  #findHolders(row: Record<string, WireValue>, key: readonly SqlValue[]): SqlValue[][] {
    const found = new Map<string, SqlValue[]>();
    for (const h of this.#holders) {
      if (!h.columns.every((c) => Object.hasOwn(row, c))) continue;
      const params = h.columns.map((c) => fromWire(row[c]));
      if (h.byValue && params.includes(null)) continue; // NULLs never collide
      // Expression queries take the values twice: for the expressions and for the predicate.
      const bind = h.byValue ? [...params, ...key] : [...params, ...params, ...key];
      for (const holder of h.stmt.all(bind) as SqlValue[][])
        found.set(holder.map((v) => String(v)).join('\u0000'), holder);
    }
    return [...found.values()];
  }
}

/**
 * The row a write returned. None: an application trigger's `RAISE(IGNORE)` skipped the
 * statement, which is a refusal like `RAISE(ABORT)` (see isRefusal), not a write.
 */
function stored(row: unknown): SqlValue[] {
  if (row !== undefined) return row as SqlValue[];
  throw Object.assign(new Error('ignored by a trigger (RAISE(IGNORE))'), {
    code: 'SQLITE_CONSTRAINT_TRIGGER',
  });
}

interface WriteStatements {
  readonly upsert: Statement;
  readonly update: Statement;
  readonly insert: Statement;
  /** Inserts only when no row holds the key or a UNIQUE value (see insertNew). */
  readonly insertNew: Statement;
  /** SQLite's REPLACE: only for a collision no holder query finds. */
  readonly replace: Statement;
}

/** A query for the keys of the rows holding the values one UNIQUE index gives a change's row. */
interface HolderQuery {
  /** The columns the query takes, in order, followed by the change's key. */
  readonly columns: readonly string[];
  /** Matched by column values (NULLs never collide); otherwise by the index's expressions and predicate. */
  readonly byValue: boolean;
  readonly stmt: Statement;
}

/**
 * One query per UNIQUE index besides the key. Plain column indexes match by
 * value. Partial and expression indexes (`lower(email) ... WHERE deleted = 0`)
 * match by their own expressions, evaluated on the change's values in a
 * subquery, and their predicate: exactly the rows SQLite finds in conflict.
 */
function uniqueHolderQueries(db: Database, schema: TableSchema, keyIs: string): HolderQuery[] {
  const t = q(schema.name);
  const keys = schema.keyColumns.map(q).join(', ');
  const prepare = (sql: string): Statement => {
    const stmt = db.prepare(sql).raw(true);
    stmt.safeIntegers(true);
    return stmt;
  };
  const indexes = db.prepare(`PRAGMA index_list(${t})`).all() as {
    name: string;
    unique: number;
    origin: string;
    partial: number;
  }[];
  const out: HolderQuery[] = [];
  for (const idx of indexes) {
    if (Number(idx.unique) !== 1 || idx.origin === 'pk') continue;
    const cols = db.prepare(`PRAGMA index_info(${q(idx.name)})`).all() as {
      cid: number;
      name: string | null;
    }[];
    const isPlain = Number(idx.partial) !== 1 && cols.every((c) => c.cid >= 0 && c.name !== null);
    if (isPlain) {
      const columns = cols.map((c) => c.name!);
      out.push({
        columns,
        byValue: true,
        stmt: prepare(
          `SELECT ${keys} FROM ${t} WHERE ${columns.map((c) => `${q(c)} = ?`).join(' AND ')} AND NOT (${keyIs})`,
        ),
      });
      continue;
    }
    const sql = db
      .prepare("SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = ?")
      .pluck()
      .get(idx.name) as string | null | undefined;
    const parts = sql == null ? undefined : indexParts(sql);
    if (parts === undefined) continue; // cannot be matched: SQLite's REPLACE resolves its collisions
    // Every column of the table, as the change's values: the index's expressions evaluated on them.
    const columns = capturedColumns(schema).filter((c) => c !== schema.rowidAlias);
    const incoming = `(SELECT ${parts.expressions} FROM (SELECT ${columns.map((c) => `? AS ${q(c)}`).join(', ')}))`;
    out.push({
      columns,
      byValue: false,
      stmt: prepare(
        // `=`: a NULL expression never collides, as in the index.
        `SELECT ${keys} FROM ${t} WHERE (${parts.expressions}) = ${incoming}` +
          (parts.where === undefined ? '' : ` AND (${parts.where})`) +
          ` AND (SELECT (${parts.where ?? '1'}) FROM (SELECT ${columns.map((c) => `? AS ${q(c)}`).join(', ')}))` +
          ` AND NOT (${keyIs})`,
      ),
    });
  }
  return out;
}

/** The expression list and WHERE clause of a `CREATE [UNIQUE] INDEX ... ON t (...) [WHERE ...]` statement. */
export function indexParts(sql: string): { expressions: string; where: string | undefined } | undefined {
  const on = /\bON\s+(?:"(?:[^"]|"")*"|`[^`]*`|\[[^\]]*\]|[^\s(]+)\s*\(/iu.exec(sql);
  if (on === null) return undefined;
  let depth = 1;
  let quote: string | undefined;
  let i = on.index + on[0].length;
  const start = i;
  for (; i < sql.length && depth > 0; i++) {
    const ch = sql[i]!;
    if (quote !== undefined) {
      if (ch === quote) quote = undefined;
    } else if (ch === "'" || ch === '"' || ch === '`') quote = ch;
    else if (ch === '[') quote = ']';
    else if (ch === '(') depth++;
    else if (ch === ')') depth--;
  }
  if (depth !== 0) return undefined;
  const expressions = sql
    .slice(start, i - 1)
    .replace(/\s+(ASC|DESC)\s*(?=,|$)/giu, '')
    .trim();
  const rest = sql.slice(i).trim();
  const where = /^WHERE\s+([\s\S]+)$/iu.exec(rest)?.[1];
  return { expressions, where };
}
