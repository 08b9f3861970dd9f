import type { Database, Statement } from 'better-sqlite3';
import { quoteIdent as q, RETIRED_NAMES } from './names.ts';

/** What became of a retired table or column: its new name, or null when it was dropped. */
export interface Retirement {
  readonly renamedTo: string | null;
}

/** The whole table, in the `col` column. */
const TABLE = '';
/** Renames followed at most this far (a chain a → b → c; a loop a → b → a ends here). */
const MAX_HOPS = 16;

/**
 * Tables and columns this node renamed or dropped (`__harmonylite___retired_names`),
 * written by the capture install when it sees them go, read by the applier: a change
 * from a node still on the old schema is mapped to the new name or, for a dropped
 * name, skipped; only a name never seen here can still be "schema not created yet"
 * (invariant 5). A name that comes back (re-created) is no longer retired.
 * Runs inside the caller's transaction; statements are prepared once.
 */
export class RetiredNames {
  readonly #get: Statement;
  readonly #put: Statement;
  readonly #forget: Statement;
  readonly #forgetTable: Statement;
  readonly #moveColumns: Statement;

  constructor(db: Database) {
    this.#get = db.prepare(`SELECT renamed_to FROM ${q(RETIRED_NAMES)} WHERE tbl = ? AND col = ?`).raw(true);
    this.#put = db.prepare(
      `INSERT INTO ${q(RETIRED_NAMES)} (tbl, col, renamed_to, retired_at) VALUES (?, ?, ?, ?) ` +
        `ON CONFLICT (tbl, col) DO UPDATE SET renamed_to = excluded.renamed_to, retired_at = excluded.retired_at`,
    );
    this.#forget = db.prepare(`DELETE FROM ${q(RETIRED_NAMES)} WHERE tbl = ? AND col = ?`);
    this.#forgetTable = db.prepare(`DELETE FROM ${q(RETIRED_NAMES)} WHERE tbl = ?`);
    this.#moveColumns = db.prepare(
      `INSERT OR REPLACE INTO ${q(RETIRED_NAMES)} (tbl, col, renamed_to, retired_at) ` +
        `SELECT ?, col, renamed_to, retired_at FROM ${q(RETIRED_NAMES)} WHERE tbl = ? AND col <> ''`,
    );
  }

  /** A table that is gone: renamed (its retired columns follow it) or dropped. */
  retireTable(table: string, renamedTo: string | null, at: number): void {
    if (renamedTo !== null) this.#moveColumns.run(renamedTo, table);
    this.#forgetTable.run(table);
    this.#put.run(table, TABLE, renamedTo, at);
  }

  retireColumn(table: string, column: string, renamedTo: string | null, at: number): void {
    this.#put.run(table, column, renamedTo, at);
  }

  /** A table (re-)created under this name: changes naming it apply to it again. */
  restoreTable(table: string): void {
    this.#forget.run(table, TABLE);
  }

  /** A column (re-)created: changes naming it apply to it again. */
  restoreColumn(table: string, column: string): void {
    this.#forget.run(table, column);
  }

  /** The table's final name when it was renamed, null when dropped, undefined when never retired here. */
  table(name: string): string | null | undefined {
    return this.#follow(name, (n) => [n, TABLE]);
  }

  /** The column's final name in `table` when it was renamed, null when dropped, undefined when never retired here. */
  column(table: string, name: string): string | null | undefined {
    return this.#follow(name, (n) => [table, n]);
  }

  #follow(name: string, key: (n: string) => [string, string]): string | null | undefined {
    let current = name;
    let found = false;
    for (let hop = 0; hop < MAX_HOPS; hop++) {
      const row = this.#get.get(...key(current)) as [string | null] | undefined;
      if (row === undefined) break;
      found = true;
      if (row[0] === null) return null;
      current = row[0];
    }
    return found ? current : undefined;
  }
}
