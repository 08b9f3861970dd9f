import type { Database } from 'better-sqlite3';
import { CAPTURED_TABLES, changeLogTable, quoteIdent as q } from '../cdc/names.ts';

/**
 * Deletes published change-log rows older than `cleanup_interval`. Pending
 * rows (state 0) and refused ones (state 2) are never deleted here.
 */
export function cleanupChangeLogs(db: Database, olderThanMs: number, now = Date.now()): number {
  const tables = db
    .prepare(`SELECT name FROM ${q(CAPTURED_TABLES)}`)
    .pluck()
    .all() as string[];
  const cutoff = now - olderThanMs;
  let deleted = 0;
  db.transaction(() => {
    for (const t of tables) {
      deleted += db
        .prepare(`DELETE FROM ${q(changeLogTable(t))} WHERE state = 1 AND created_at < ?`)
        .run(cutoff).changes;
    }
  }).immediate();
  return deleted;
}
