import type { Database } from 'better-sqlite3';
import type { SqlValue } from '../codec/sql-value.ts';
import { quoteIdent as q } from './names.ts';
import type { TableSchema } from './table-schema.ts';

/** Rows read per query: the caller may write between pages (a connection cannot write while it iterates). */
const PAGE_ROWS = 5000;

/**
 * Every row of a table, `columns` only, in pages ordered by rowid, or by key
 * for a WITHOUT ROWID table. Each page is read whole, so nothing stays open
 * between pages.
 */
export function* tablePages(
  db: Database,
  schema: TableSchema,
  columns: readonly string[],
): Generator<SqlValue[][]> {
  const t = q(schema.name);
  const withoutRowid =
    (db
      .prepare('SELECT wr FROM pragma_table_list WHERE schema = ? AND name = ?')
      .pluck()
      .get('main', schema.name) as number | undefined) === 1;
  const order = withoutRowid ? schema.keyColumns.map(q) : ['rowid'];
  const select = `SELECT ${columns.map(q).join(', ')}, ${order.join(', ')} FROM ${t}`;
  const first = db
    .prepare(`${select} ORDER BY ${order.join(', ')} LIMIT ${PAGE_ROWS}`)
    .raw(true)
    .safeIntegers(true);
  const next = db
    .prepare(
      `${select} WHERE (${order.join(', ')}) > (${order.map(() => '?').join(', ')}) ORDER BY ${order.join(', ')} LIMIT ${PAGE_ROWS}`,
    )
    .raw(true)
    .safeIntegers(true);
  let page = first.all() as SqlValue[][];
  while (page.length > 0) {
    yield page.map((row) => row.slice(0, columns.length));
    if (page.length < PAGE_ROWS) return;
    page = next.all(page[page.length - 1]!.slice(columns.length)) as SqlValue[][];
  }
}

/** `tablePages`, row by row. */
export function* tableRows(
  db: Database,
  schema: TableSchema,
  columns: readonly string[],
): Generator<SqlValue[]> {
  for (const page of tablePages(db, schema, columns)) yield* page;
}
