import type { Database } from 'better-sqlite3';
import { CAPTURED_TABLES, changeLogTable, quoteIdent as q } from '../cdc/names.ts';

/** Where a cleanup pass goes on: a table (index in `tables`) and the lowest change id not looked at. */
export interface CleanupPosition {
  readonly table: number;
  readonly fromId: number;
}

/** The captured tables, in the order a pass walks them. */
export function cleanupTables(db: Database): string[] {
  return db
    .prepare(`SELECT name FROM ${q(CAPTURED_TABLES)} ORDER BY name`)
    .pluck()
    .all() as string[];
}

/** What a cleanup pass deletes: published rows created before `cutoff`; `now` tells future-dated rows apart. */
export interface CleanupWindow {
  readonly cutoff: number;
  readonly now: number;
}

/**
 * One step of a cleanup pass: deletes the published change-log rows (state 1)
 * created before `cutoff` among `span` consecutive change ids, from `at` on.
 * Pending rows (state 0) and refused ones (state 2) are never deleted, whatever
 * their age. The range is read first without a lock; the write lock is taken
 * (one short IMMEDIATE transaction) only when it holds rows to delete, so a
 * backlog of pending rows costs reads, not write locks.
 *
 * Short steps, by id range: after a burst of 200k rows, one transaction held the
 * write lock ~400 ms, and steps of 5,000 rows picked by a subquery (~15 ms each,
 * back to back) still held up the application's commits and replication by up
 * to 300 ms (bench, latency right after a burst). A rowid range deletes at half
 * the cost per row. A step is a pure function of `at`: if it fails with
 * SQLITE_BUSY, running it again is safe. `next` is undefined at the end of the
 * pass: every table was walked up to its first row younger than `cutoff` (ids
 * grow with time; a row behind a younger one waits for the next pass). A row
 * dated in the future (the clock was set back since) does not end the walk.
 */
export function cleanupStep(
  db: Database,
  tables: readonly string[],
  window: CleanupWindow,
  span: number,
  at: CleanupPosition = { table: 0, fromId: Number.MIN_SAFE_INTEGER },
): { deleted: number; next: CleanupPosition | undefined } {
  const { cutoff, now } = window;
  for (let t = at.table, fromId = at.fromId; t < tables.length; t++, fromId = Number.MIN_SAFE_INTEGER) {
    const log = q(changeLogTable(tables[t]!));
    // The first row from `fromId` on: gaps left by earlier passes are skipped at once.
    const first = db
      .prepare(`SELECT id, created_at FROM ${log} WHERE id >= ? ORDER BY id LIMIT 1`)
      .get(fromId) as { id: number; created_at: number } | undefined;
    if (first === undefined || (first.created_at >= cutoff && first.created_at <= now)) continue;
    const next = { table: t, fromId: first.id + span };
    const range = [first.id, first.id + span, cutoff] as const;
    const where = `id >= ? AND id < ? AND state = 1 AND created_at < ?`;
    if (db.prepare(`SELECT 1 FROM ${log} WHERE ${where} LIMIT 1`).get(...range) === undefined)
      return { deleted: 0, next };
    const deleted = db
      .transaction(() => db.prepare(`DELETE FROM ${log} WHERE ${where}`).run(...range).changes)
      .immediate();
    return { deleted, next };
  }
  return { deleted: 0, next: undefined };
}
