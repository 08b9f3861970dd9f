/**
 * The per-node record of replicated migrations (`__harmonylite___migrations`):
 * which stream sequences this database applied, failed or was told to pass
 * over. Every write is one statement, so it also works from a command while
 * the node runs.
 */
import type { Database } from 'better-sqlite3';
import { MIGRATIONS, quoteIdent as q } from '../cdc/names.ts';

export type MigrationStatus = 'applied' | 'failed' | 'resolved';

export interface MigrationRecord {
  readonly seq: number;
  readonly hash: string;
  readonly name: string;
  readonly status: MigrationStatus;
  /** When it was applied, failed last or resolved, ms since the epoch. */
  readonly at: number;
  /** For a failure: the statement that failed and SQLite's error. */
  readonly statement: string | null;
  readonly error: string | null;
}

export function hasMigrationTable(db: Database): boolean {
  return (
    db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").get(MIGRATIONS) !== undefined
  );
}

export function listMigrations(db: Database): MigrationRecord[] {
  if (!hasMigrationTable(db)) return [];
  return db.prepare(`SELECT * FROM ${q(MIGRATIONS)} ORDER BY seq`).all() as MigrationRecord[];
}

export function migrationRecord(db: Database, seq: number): MigrationRecord | undefined {
  return db.prepare(`SELECT * FROM ${q(MIGRATIONS)} WHERE seq = ?`).get(seq) as MigrationRecord | undefined;
}

/** True when this database applied a migration with this content (under any sequence). */
export function appliedHash(db: Database, hash: string): number | undefined {
  return db
    .prepare(`SELECT seq FROM ${q(MIGRATIONS)} WHERE hash = ? AND status = 'applied' ORDER BY seq LIMIT 1`)
    .pluck()
    .get(hash) as number | undefined;
}

/**
 * The sequence after which this node reads the stream: before the first failed
 * migration (it holds the stream), else the last one done. Sequences past it
 * that are already done (resolved ahead by the operator) are skipped when read.
 */
export function migrationPosition(db: Database): number {
  const failed = db
    .prepare(`SELECT min(seq) FROM ${q(MIGRATIONS)} WHERE status = 'failed'`)
    .pluck()
    .get() as number | null;
  if (failed !== null) return failed - 1;
  return Number(
    db
      .prepare(`SELECT coalesce(max(seq), 0) FROM ${q(MIGRATIONS)}`)
      .pluck()
      .get(),
  );
}

export function recordMigration(
  db: Database,
  r: Pick<MigrationRecord, 'seq' | 'hash' | 'name' | 'status'> & {
    statement?: string | null;
    error?: string | null;
  },
): void {
  db.prepare(
    `INSERT INTO ${q(MIGRATIONS)} (seq, hash, name, status, at, statement, error) VALUES (?, ?, ?, ?, ?, ?, ?) ` +
      `ON CONFLICT (seq) DO UPDATE SET hash = excluded.hash, name = excluded.name, status = excluded.status, ` +
      `at = excluded.at, statement = excluded.statement, error = excluded.error`,
  ).run(r.seq, r.hash, r.name, r.status, Date.now(), r.statement ?? null, r.error ?? null);
}
