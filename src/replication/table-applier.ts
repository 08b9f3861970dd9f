import type { Database, Statement } from 'better-sqlite3';
import { quoteIdent as q } from '../cdc/names.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import { MalformedMessageError } from '../codec/change-record.ts';
import { fromWire, hasTextBytes, placeholder, type SqlValue, type WireValue } from '../codec/sql-value.ts';

/** A change that cannot apply until this node's schema catches up: its shard waits, in order (invariant 5). */
export class SchemaLagError extends Error {
  override readonly name = 'SchemaLagError';
  readonly code = 'ERR_SCHEMA_LAG';
}

/** SQLite errors that mean "this node's schema is behind the sender's". */
function isSchemaLag(err: unknown): boolean {
  const code = (err as { code?: string }).code ?? '';
  const msg = (err as Error).message ?? '';
  return (
    code === 'SQLITE_CONSTRAINT_NOTNULL' ||
    code === 'SQLITE_CONSTRAINT_CHECK' ||
    code === 'SQLITE_CONSTRAINT_DATATYPE' ||
    code === 'SQLITE_CONSTRAINT_TRIGGER' ||
    code === 'SQLITE_MISMATCH' ||
    (code === 'SQLITE_ERROR' && /no such (table|column)|has no column named/.test(msg))
  );
}

export interface ApplyOutcome {
  /** Rows of other keys removed because they held a UNIQUE value this change takes. */
  readonly displaced: number;
}

/**
 * Applies changes to one table. Upsert on the key (`ON CONFLICT (key) DO
 * UPDATE` keeps the row in place, unlike HarmonyLite's INSERT OR REPLACE);
 * when the upsert collides on another UNIQUE constraint, the row holding the
 * value is removed and the upsert retried, as INSERT OR REPLACE would, so every
 * node reaches the same state given the same order. Statements are prepared
 * once per column set.
 *
 * Contract of a UNIQUE collision: exactly the rows SQLite reports in conflict
 * go, nothing else. Full column indexes are matched by value (exact count,
 * the key's row updated in place). Partial indexes (`... WHERE deleted = 0`)
 * are not: matching by value would also remove rows outside the predicate,
 * which never collide; nor can expression indexes (`lower(email)`) be. When a
 * collision remains, SQLite's own REPLACE resolution removes the rows that
 * really conflict (the key's row is then re-inserted, so columns the change
 * does not carry take their defaults; such removals count as one).
 */
export class TableApplier {
  readonly #db: Database;
  readonly schema: TableSchema;
  readonly #columns: Set<string>;
  readonly #upserts = new Map<string, Statement>();
  readonly #replaces = new Map<string, Statement>();
  readonly #delete: Statement;
  readonly #displace: { columns: readonly string[]; stmt: Statement }[];
  readonly #keyWhere: string;

  constructor(db: Database, schema: TableSchema) {
    this.#db = db;
    this.schema = schema;
    this.#columns = new Set([
      ...schema.columns,
      ...(schema.rowidAlias === undefined ? [] : [schema.rowidAlias]),
    ]);
    this.#keyWhere = schema.keyColumns.map((k) => `${q(k)} = ?`).join(' AND ');
    this.#delete = db.prepare(`DELETE FROM ${q(schema.name)} WHERE ${this.#keyWhere}`);
    const partial = new Set(
      (
        db.prepare(`PRAGMA index_list(${q(schema.name)})`).all() as {
          name: string;
          partial: number | bigint;
        }[]
      )
        .filter((i) => Number(i.partial) === 1)
        .map((i) => i.name),
    );
    this.#displace = schema.uniqueIndexes
      .filter((u) => !partial.has(u.name))
      .map((u) => ({
        columns: u.columns,
        stmt: db.prepare(
          `DELETE FROM ${q(schema.name)} WHERE ${u.columns.map((c) => `${q(c)} = ?`).join(' AND ')} AND NOT (${schema.keyColumns
            .map((k) => `${q(k)} IS ?`)
            .join(' AND ')})`,
        ),
      }));
  }

  /** Every change must carry its key: without it no node can tell which row it means. */
  #requireKey(row: Record<string, WireValue>): void {
    for (const k of this.schema.keyColumns) {
      if (!Object.hasOwn(row, k)) {
        throw new MalformedMessageError(
          `table ${this.schema.name}: change has no value for key column ${JSON.stringify(k)}`,
        );
      }
    }
  }

  #key(row: Record<string, WireValue>): SqlValue[] {
    this.#requireKey(row);
    return this.schema.keyColumns.map((k) => fromWire(row[k]));
  }

  #prepare(sql: string): Statement {
    try {
      return this.#db.prepare(sql);
    } catch (err) {
      if (isSchemaLag(err))
        throw new SchemaLagError(`table ${this.schema.name}: ${(err as Error).message}`, { cause: err });
      throw err;
    }
  }

  /** INSERT OR REPLACE: SQLite removes every row in conflict, whatever the index. */
  #replace(cols: readonly string[]): Statement {
    const sig = cols.join('\u0000');
    let stmt = this.#replaces.get(sig);
    if (stmt === undefined) {
      stmt = this.#prepare(
        `INSERT OR REPLACE INTO ${q(this.schema.name)} (${cols.map(q).join(', ')}) VALUES (${cols.map(() => '?').join(', ')})`,
      );
      this.#replaces.set(sig, stmt);
    }
    return stmt;
  }

  #upsert(cols: readonly string[]): Statement {
    const sig = cols.join('\u0000');
    let stmt = this.#upserts.get(sig);
    if (stmt === undefined) {
      stmt = this.#prepare(
        this.#upsertSql(
          cols,
          cols.map(() => '?'),
        ),
      );
      this.#upserts.set(sig, stmt);
    }
    return stmt;
  }

  /** The upsert of `cols`, each value bound through its `placeholders` entry. */
  #upsertSql(cols: readonly string[], placeholders: readonly string[]): string {
    const keys = new Set(this.schema.keyColumns);
    const updates = cols.filter((c) => !keys.has(c)).map((c) => `${q(c)} = excluded.${q(c)}`);
    const conflict =
      `ON CONFLICT (${this.schema.keyColumns.map(q).join(', ')}) ` +
      (updates.length ? `DO UPDATE SET ${updates.join(', ')}` : 'DO NOTHING');
    // A rowid-keyed table has no conflict target other than the rowid itself.
    return this.schema.rowidAlias === undefined
      ? `INSERT INTO ${q(this.schema.name)} (${cols.map(q).join(', ')}) VALUES (${placeholders.join(', ')}) ${conflict}`
      : `INSERT OR REPLACE INTO ${q(this.schema.name)} (${cols.map(q).join(', ')}) VALUES (${placeholders.join(', ')})`;
  }

  /**
   * A change holding TEXT carried as bytes (not valid UTF-8; rare): statements built for it, each
   * such value bound through `CAST(? AS TEXT)` so the row gets the exact bytes as TEXT.
   */
  #applyExact(type: 'insert' | 'update' | 'delete', row: Record<string, WireValue>): ApplyOutcome {
    const keys = this.schema.keyColumns;
    const key = this.#key(row);
    if (type === 'delete') {
      const where = keys.map((k) => `${q(k)} = ${placeholder(row[k])}`).join(' AND ');
      this.#prepare(`DELETE FROM ${q(this.schema.name)} WHERE ${where}`).run(key);
      return { displaced: 0 };
    }
    const cols = Object.keys(row);
    for (const c of cols)
      if (!this.#columns.has(c))
        throw new SchemaLagError(`table ${this.schema.name} has no column ${JSON.stringify(c)}`);
    const values = cols.map((c) => fromWire(row[c]));
    const placeholders = cols.map((c) => placeholder(row[c]));
    try {
      this.#prepare(this.#upsertSql(cols, placeholders)).run(values);
      return { displaced: 0 };
    } catch (err) {
      if ((err as { code?: string }).code !== 'SQLITE_CONSTRAINT_UNIQUE') throw err;
    }
    // Another row holds one of its UNIQUE values: SQLite's REPLACE removes it (counted as one).
    this.#prepare(
      `INSERT OR REPLACE INTO ${q(this.schema.name)} (${cols.map(q).join(', ')}) VALUES (${placeholders.join(', ')})`,
    ).run(values);
    return { displaced: 1 };
  }

  /** The columns of the last insert/update and their statement: consecutive changes mostly share them. */
  #lastCols: readonly string[] = [];
  #lastStmt: Statement | undefined;

  /** The upsert for a change carrying exactly `cols`; SchemaLagError for a column this table lacks. */
  #upsertFor(cols: readonly string[]): Statement {
    const last = this.#lastCols;
    if (this.#lastStmt !== undefined && cols.length === last.length) {
      let same = true;
      for (let i = 0; i < cols.length; i++) {
        if (cols[i] !== last[i]) {
          same = false;
          break;
        }
      }
      if (same) return this.#lastStmt;
    }
    for (const c of cols) {
      if (!this.#columns.has(c))
        throw new SchemaLagError(`table ${this.schema.name} has no column ${JSON.stringify(c)}`);
    }
    const stmt = this.#upsert(cols);
    this.#lastCols = cols;
    this.#lastStmt = stmt;
    return stmt;
  }

  /** Applies one change; SchemaLagError when this node's schema cannot take it yet. */
  apply(type: 'insert' | 'update' | 'delete', row: Record<string, WireValue>): ApplyOutcome {
    try {
      if (hasTextBytes(row)) return this.#applyExact(type, row);
      if (type === 'delete') {
        this.#delete.run(this.#key(row));
        return { displaced: 0 };
      }
      this.#requireKey(row); // insert/update must name its row, as a delete must
      const cols = Object.keys(row);
      const stmt = this.#upsertFor(cols);
      const values: SqlValue[] = new Array(cols.length);
      for (let i = 0; i < cols.length; i++) values[i] = fromWire(row[cols[i]!]);
      try {
        stmt.run(values);
        return { displaced: 0 };
      } catch (err) {
        if ((err as { code?: string }).code !== 'SQLITE_CONSTRAINT_UNIQUE') throw err;
      }
      const displaced = this.#displaceHolders(row);
      try {
        stmt.run(values);
        return { displaced };
      } catch (err) {
        if ((err as { code?: string }).code !== 'SQLITE_CONSTRAINT_UNIQUE') throw err;
      }
      // Still in conflict: on a partial or expression index, or one with its own collation.
      this.#replace(cols).run(values);
      return { displaced: displaced + 1 };
    } catch (err) {
      if (err instanceof SchemaLagError || !isSchemaLag(err)) throw err;
      throw new SchemaLagError(`table ${this.schema.name}: ${(err as Error).message}`, { cause: err });
    }
  }

  #displaceHolders(row: Record<string, WireValue>): number {
    const key = this.#key(row);
    let removed = 0;
    for (const { columns, stmt } of this.#displace) {
      if (!columns.every((c) => Object.hasOwn(row, c))) continue;
      removed += stmt.run([...columns.map((c) => fromWire(row[c])), ...key]).changes;
    }
    return removed;
  }
}
