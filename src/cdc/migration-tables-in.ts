import type Database from 'better-sqlite3';
import { TableFilter } from './table-filter.ts';

/** The tables of `db` that match the `migration_tables` patterns (none when there are no patterns). */
export function migrationTablesIn(db: Database.Database | undefined, patterns: readonly string[]): string[] {
  if (db === undefined || patterns.length === 0) return [];
  const matches = new TableFilter(patterns, []);
  const names = db
    .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT GLOB 'sqlite_*' ORDER BY name")
    .pluck()
    .all() as string[];
  return names.filter((n) => matches.accepts(n));
}
