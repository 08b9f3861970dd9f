import type Database from 'better-sqlite3';
import type { CaptureState } from '../cdc/capture-installer.ts';
import { migrationTablesIn } from '../cdc/migration-tables-in.ts';
import { computeSchemaHash } from '../cdc/schema-hash.ts';
import type { Logger } from '../logger.ts';

/**
 * What a node says about its capture after each install: the tables it
 * watches, the tables it skips and the migration bookkeeping tables it leaves
 * out (each once, not at every schema re-check), and its schema hash whenever
 * it changes ("Computed schema hash", as HarmonyLite logs it).
 */
export class CaptureLog {
  readonly #logger: Logger;
  readonly #migrationTables: readonly string[];
  readonly #reported = new Set<string>();
  #schemaHash = '';

  constructor(logger: Logger, migrationTables: readonly string[]) {
    this.#logger = logger;
    this.#migrationTables = migrationTables;
  }

  /** SHA-256 of the captured tables' shape (src/cdc/schema-hash.ts); "" before the first report. */
  get schemaHash(): string {
    return this.#schemaHash;
  }

  report(db: Database.Database, state: CaptureState, initial: boolean): void {
    const log = this.#logger;
    for (const s of state.skipped) {
      if (this.#once(`skipped\0${s.name}\0${s.reason}`))
        log.info({ table: s.name, reason: s.reason }, 'table skipped');
    }
    for (const name of migrationTablesIn(db, this.#migrationTables)) {
      if (this.#once(`migration\0${name}`))
        log.info({ table: name }, 'migration bookkeeping table not replicated (migration_tables)');
    }
    const hash = computeSchemaHash(
      db,
      state.tables.map((t) => t.name),
    );
    if (hash !== this.#schemaHash) {
      this.#schemaHash = hash;
      log.info({ schema_hash: `${hash.slice(0, 16)}...` }, 'Computed schema hash');
    }
    if (state.indexed > 0)
      log.info({ rows: state.indexed }, 'replicated-state index built over the existing rows');
    if (state.escaped > 0)
      log.warn(
        { rows: state.escaped },
        'found writes made while capture was absent (table rebuilt, triggers dropped, or written while stopped); publishing them',
      );
    if (initial) {
      log.info({ tables: state.tables.map((t) => t.name) }, `watching ${state.tables.length} tables`);
    } else if (state.changed.length > 0) {
      log.info(
        { tables: state.changed, backfilled: state.backfilled },
        'capture brought up to date after a schema change',
      );
    }
  }

  #once(key: string): boolean {
    if (this.#reported.has(key)) return false;
    this.#reported.add(key);
    return true;
  }
}
