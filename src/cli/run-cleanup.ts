import type { Database } from 'better-sqlite3';
import { removeCapture } from '../cdc/capture-installer.ts';
import { GLOBAL_LOG, IDENTITY_TABLES, OUTBOX, quoteIdent } from '../cdc/names.ts';
import type { Config } from '../config/config.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { openDatabase } from '../sqlite/open-database.ts';

/** -cleanup refused: changes not yet published would be dropped. */
export class PendingChangesError extends Error {
  override readonly name = 'PendingChangesError';
  readonly code = 'ERR_PENDING_CHANGES';
  readonly hint =
    'start the node until -status shows nothing pending, then stop it and run -cleanup again; ' +
    '-cleanup -force drops them (the next start republishes the rows they changed, at their current values)';
}

/** Changes not yet published: per table, the captured changes still in the global log, and batches in flight. */
export interface PendingChanges {
  readonly total: number;
  readonly byTable: Readonly<Record<string, number>>;
  /** Shards with a batch published but not yet acknowledged. */
  readonly batchesInFlight: number;
}

export function pendingChanges(db: Database): PendingChanges {
  const has = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").pluck();
  const byTable: Record<string, number> = {};
  let total = 0;
  if (has.get(GLOBAL_LOG) !== undefined) {
    const rows = db
      .prepare(
        `SELECT table_name, count(*) FROM ${quoteIdent(GLOBAL_LOG)} GROUP BY table_name ORDER BY table_name`,
      )
      .raw(true)
      .all() as [string, number][];
    for (const [table, n] of rows) {
      byTable[table] = n;
      total += n;
    }
  }
  const batchesInFlight =
    has.get(OUTBOX) === undefined
      ? 0
      : (db
          .prepare(`SELECT count(*) FROM ${quoteIdent(OUTBOX)} WHERE payload IS NOT NULL`)
          .pluck()
          .get() as number);
  return { total, byTable, batchesInFlight };
}

/**
 * `-cleanup`: drops every trigger and table of ours, nothing else. Refuses while
 * changes are not yet published, unless forced: then it says what it drops.
 */
export function runCleanup(config: Config, logger: Logger, options: { force?: boolean } = {}): number {
  requireDatabase(config);
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: false });
  try {
    const pending = pendingChanges(db);
    if (pending.total > 0 || pending.batchesInFlight > 0) {
      const tables = Object.entries(pending.byTable)
        .map(([t, n]) => `${t}: ${n}`)
        .join(', ');
      const what =
        `${pending.total} changes not yet published` +
        (tables === '' ? '' : ` (${tables})`) +
        (pending.batchesInFlight > 0 ? `, ${pending.batchesInFlight} batches in flight` : '');
      if (options.force !== true) throw new PendingChangesError(`-cleanup would drop ${what}`);
      logger.warn(
        { changes: pending.total, tables: pending.byTable, batches_in_flight: pending.batchesInFlight },
        `-force: dropping ${what}; the next start republishes the rows they changed, at their current values`,
      );
    }
    const removed = removeCapture(db);
    // Created by the node, not by capture (the generated node id: the next start generates a new one).
    const present = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").pluck();
    for (const t of IDENTITY_TABLES) {
      if (present.get(t) === undefined) continue;
      db.exec(`DROP TABLE ${quoteIdent(t)}`);
      removed.tables++;
    }
    logger.info(
      { db: config.db_path, triggers: removed.triggers, tables: removed.tables },
      'removed HarmonyLite triggers and tables',
    );
    return 0;
  } finally {
    db.close();
  }
}
