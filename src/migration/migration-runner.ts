/**
 * Applies one replicated migration to this node's database, in ONE
 * transaction: capture brought up to date first (what the application wrote
 * so far is logged as usual), the capture triggers of the tables the file
 * names dropped (so DROP COLUMN and table rebuilds are allowed) after noting
 * which of their rows have no local write in flight, the
 * statements run under the replay guard (every node runs them, so they are
 * not captured), capture reinstalled for the new schema with the changes
 * indexed rather than logged, and the migration recorded. A reader sees the
 * old schema or the new one, never a mix; a write either commits before the
 * transaction (captured by the old triggers) or after it (by the new ones).
 */
import type { Database } from 'better-sqlite3';
import { installCapture, type CaptureState, type InstallOptions } from '../cdc/capture-installer.ts';
import { CAPTURED_TABLES, quoteIdent as q, REPLAY_GUARD, TRIGGER_KINDS, triggerName } from '../cdc/names.ts';
import { syncedKeys } from '../cdc/index-reconciler.ts';
import type { TableFilter } from '../cdc/table-filter.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import type { Migration } from './migration-message.ts';
import { recordMigration } from './migration-store.ts';
import { mentionedNames, refusedStatement, splitStatements, type SqlStatement } from './sql-statements.ts';

/** A statement of a migration failed (or was refused); nothing of the migration was kept. */
export class MigrationError extends Error {
  override readonly name = 'MigrationError';
  readonly code = 'MIGRATION_FAILED';
  readonly statement: SqlStatement | undefined;

  constructor(message: string, statement: SqlStatement | undefined, options?: { cause?: unknown }) {
    super(message, options);
    this.statement = statement;
  }
}

/** Thrown inside the transaction by a dry run, so that better-sqlite3 rolls it back. */
class DryRunDone extends Error {
  constructor(readonly state: CaptureState) {
    super('dry run');
  }
}

export interface RunMigrationOptions {
  readonly filter: TableFilter;
  readonly install: InstallOptions;
  /** Run everything, then roll back: checks a file against this database before it is published. */
  readonly dryRun?: boolean;
}

export interface MigrationResult {
  readonly capture: CaptureState;
  readonly statements: number;
  /** Captured tables the file names (their triggers were reinstalled). */
  readonly tables: readonly string[];
}

/** Applies `migration` or throws MigrationError (the transaction is rolled back). */
export function runMigration(
  db: Database,
  migration: Migration,
  options: RunMigrationOptions,
): MigrationResult {
  const statements = splitStatements(migration.sql);
  for (const s of statements) {
    const refused = refusedStatement(s.text);
    if (refused !== undefined) throw new MigrationError(`statement refused: ${refused}`, s);
  }
  const names = mentionedNames(migration.sql);
  let touched: string[] = [];
  const apply = db.transaction(() => {
    installCapture(db, options.filter, options.install);
    const registry = new Map(
      db
        .prepare(`SELECT name, schema FROM ${q(CAPTURED_TABLES)}`)
        .raw(true)
        .all() as [string, string][],
    );
    touched = [...registry.keys()].filter((t) => names.has(t.toLowerCase()));
    const synced = new Map<string, ReadonlySet<string>>();
    const digest = options.install.index?.digest;
    for (const t of touched) {
      const schema = registry.get(t);
      if (digest !== undefined && schema !== undefined)
        synced.set(t, syncedKeys(db, JSON.parse(schema) as TableSchema, digest));
      for (const kind of TRIGGER_KINDS) db.exec(`DROP TRIGGER IF EXISTS ${q(triggerName(t, kind))}`);
    }
    db.prepare(`INSERT OR IGNORE INTO ${q(REPLAY_GUARD)} (id) VALUES (1)`).run();
    for (const s of statements) {
      try {
        db.exec(s.text);
      } catch (err) {
        throw new MigrationError((err as Error).message, s, { cause: err });
      }
    }
    db.prepare(`DELETE FROM ${q(REPLAY_GUARD)}`).run();
    const state = installCapture(db, options.filter, { ...options.install, migrated: synced });
    if (options.dryRun === true) throw new DryRunDone(state);
    recordMigration(db, {
      seq: migration.seq,
      hash: migration.hash,
      name: migration.name,
      status: 'applied',
    });
    return state;
  });
  try {
    const capture = apply.immediate();
    return { capture, statements: statements.length, tables: touched };
  } catch (err) {
    if (err instanceof DryRunDone)
      return { capture: err.state, statements: statements.length, tables: touched };
    if (err instanceof MigrationError) throw err;
    throw new MigrationError((err as Error).message, undefined, { cause: err });
  }
}
