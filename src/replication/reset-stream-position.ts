import type Database from 'better-sqlite3';
import { POSITIONS, quoteIdent as q } from '../cdc/names.ts';

/**
 * Sets a shard's stored stream position back to 0, so its consumer starts at the
 * stream's first message: for a stream that was recreated (its sequences begin
 * at 1 again), never for the same stream (invariant 4). Run on the writer queue,
 * before the shard's consumer opens. Returns the position it replaced (0: none).
 */
export function resetStreamPosition(db: Database.Database, shard: number): number {
  const old = db
    .prepare(`SELECT stream_seq FROM ${q(POSITIONS)} WHERE shard = ?`)
    .pluck()
    .get(shard) as number | undefined;
  if (old === undefined || old === 0) return 0;
  db.prepare(`UPDATE ${q(POSITIONS)} SET stream_seq = 0, updated_at = ? WHERE shard = ?`).run(
    Date.now(),
    shard,
  );
  return old;
}
