/**
 * Reads one node's replicated state of a table as verify compares it: every
 * key of the index and of the table, with the index's version and origin and
 * the hash of the row the table actually holds. A row changed or deleted
 * behind capture (triggers absent) therefore shows, even though the index
 * alone still agrees with the other nodes. Reads in pages on a read-only
 * connection and yields to the event loop between them, so a node keeps
 * replicating while it answers.
 */
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { tablePages } from '../cdc/table-pages.ts';
import type { Database, Statement } from 'better-sqlite3';
import { quoteIdent as q, ROW_VERSIONS } from '../cdc/names.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import { capturedColumns } from '../cdc/trigger-sql.ts';
import { hashLayout, type RowDigest } from '../codec/row-digest.ts';
import type { KeyEntry } from './digest-tree.ts';

const PAGE_ROWS = 5000;
const LIVE = 0;

/**
 * Rows at version 0 (indexed at a node's first start, or backfilled) carry the
 * indexing node's id as origin: nodes started from copies of one database
 * differ only there, so at version 0 the origin is left out of the comparison.
 */
function comparedOrigin(version: number, origin: number): number {
  return version === 0 ? 0 : origin;
}

/** Every key of `schema`'s table and of the index, page by page. */
export async function* scanReplicatedState(
  db: Database,
  schema: TableSchema,
  digest: RowDigest,
): AsyncGenerator<KeyEntry> {
  const columns = capturedColumns(schema);
  const layout = hashLayout(columns);
  const keyIndexes = schema.keyColumns.map((k) => columns.indexOf(k));
  const get = db
    .prepare(`SELECT version, origin, hash, state FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND pk = ?`)
    .raw(true)
    .safeIntegers(true);
  // Keys whose row is present while the index holds no live entry: already reported with their row.
  const rowsOverNonLive = new Set<string>();
  let liveSeen = 0;
  for (const page of tablePages(db, schema, columns)) {
    await yieldToLoop();
    for (const values of page) {
      const pk = digest.key(
        keyIndexes.map((i) => values[i]!),
        schema.keyFold,
      );
      const value = digest.hash(layout, values);
      const idx = get.get(schema.name, pk) as [bigint, bigint, bigint | null, bigint] | undefined;
      const live = idx !== undefined && Number(idx[3]) === LIVE;
      if (live) liveSeen++;
      else if (idx !== undefined) rowsOverNonLive.add(pk.toString('latin1'));
      yield {
        pk,
        version: idx === undefined ? -1 : Number(idx[0]),
        origin: idx === undefined ? -1 : comparedOrigin(Number(idx[0]), Number(idx[1])),
        value,
        unversioned: !live || idx[2] !== value,
      };
    }
  }
  // Tombstones and displaced rows: no row, by version.
  for await (const page of indexPages(db, schema.name, `state != ${LIVE}`)) {
    for (const [pk, version, origin] of page) {
      if (rowsOverNonLive.has(pk.toString('latin1'))) continue;
      yield {
        pk,
        version: Number(version),
        origin: comparedOrigin(Number(version), Number(origin)),
        value: null,
        unversioned: false,
      };
    }
  }
  // Live entries whose row is gone (deleted behind capture): looked up only when the count says so.
  const live = Number(
    db
      .prepare(`SELECT count(*) FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND state = ${LIVE}`)
      .pluck()
      .get(schema.name) as number,
  );
  if (live === liveSeen) return;
  const keyIs = schema.keyColumns.map((k) => `${q(k)} IS ?`).join(' AND ');
  const exists = db.prepare(`SELECT 1 FROM ${q(schema.name)} WHERE ${keyIs}`).pluck();
  for await (const page of indexPages(db, schema.name, `state = ${LIVE}`)) {
    for (const [pk, version, origin] of page) {
      if (exists.get(digest.decodeKey(pk)) !== undefined) continue;
      yield {
        pk,
        version: Number(version),
        origin: comparedOrigin(Number(version), Number(origin)),
        value: null,
        unversioned: true,
      };
    }
  }
}

/** Index entries of a table matching `where`: [pk, version, origin] in pages by key. */
async function* indexPages(
  db: Database,
  table: string,
  where: string,
): AsyncGenerator<[Buffer, bigint, bigint][]> {
  const page: Statement = db
    .prepare(
      `SELECT pk, version, origin FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND ${where} AND pk > ? ORDER BY pk LIMIT ${PAGE_ROWS}`,
    )
    .raw(true)
    .safeIntegers(true);
  let after: Buffer = Buffer.alloc(0);
  for (;;) {
    const rows = page.all(table, after) as [Buffer, bigint, bigint][];
    if (rows.length > 0) yield rows;
    if (rows.length < PAGE_ROWS) return;
    after = rows[rows.length - 1]![0];
    await yieldToLoop();
  }
}
