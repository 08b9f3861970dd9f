import type { Database } from 'better-sqlite3';
import { CAPTURED_TABLES, changeLogTable, quoteIdent as q } from '../cdc/names.ts';

/**
 * Deletes published change-log rows older than `cleanup_interval`, at most
 * `limit` per call (one short transaction: after a burst of 200k rows, one
 * transaction held the write lock ~400 ms, a stall for the application and for
 * replication; callers repeat while a call returns `limit`). Pending rows
 * (state 0) and refused ones (state 2) are never deleted here.
 */
export function cleanupChangeLogs(
  db: Database,
  olderThanMs: number,
  now = Date.now(),
  limit = Number.MAX_SAFE_INTEGER,
): number {
  const tables = db
    .prepare(`SELECT name FROM ${q(CAPTURED_TABLES)}`)
    .pluck()
    .all() as string[];
  const cutoff = now - olderThanMs;
  let deleted = 0;
  db.transaction(() => {
    for (const t of tables) {
      if (deleted >= limit) break;
      const log = q(changeLogTable(t));
      deleted += db
        .prepare(
          `DELETE FROM ${log} WHERE id IN (SELECT id FROM ${log} WHERE state = 1 AND created_at < ? LIMIT ?)`,
        )
        .run(cutoff, limit - deleted).changes;
    }
  }).immediate();
  return deleted;
}
