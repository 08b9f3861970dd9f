import type { Config } from './config.ts';

/** Every table pattern this node neither captures nor applies: `exclude_tables` and `migration_tables`. */
export function excludedTables(config: Config): string[] {
  return [...config.exclude_tables, ...config.migration_tables];
}
