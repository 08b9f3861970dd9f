import { removeCapture } from '../cdc/capture-installer.ts';
import { IDENTITY_TABLES, quoteIdent } from '../cdc/names.ts';
import type { Config } from '../config/config.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { openDatabase } from '../sqlite/open-database.ts';

/** `-cleanup`: drops every trigger and table of ours, nothing else. */
export function runCleanup(config: Config, logger: Logger): number {
  requireDatabase(config);
  const db = openDatabase(config.db_path, { busyTimeoutMs: config.busy_timeout, readonly: false });
  try {
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
