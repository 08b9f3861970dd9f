import { createHash } from 'node:crypto';
import type { Database } from 'better-sqlite3';
import { quoteIdent } from './names.ts';

interface ColumnRow {
  name: string;
  type: string;
  notnull: number;
  pk: number;
  hidden?: number;
}

/**
 * A SHA-256 over the replicated tables' shape, in hex, equal on nodes whose
 * replicated schemas agree: tables by name, each as its name, then per column
 * (by name) `|name:declared type:notnull:pk`, then a newline (HarmonyLite's
 * layout of its schema hash). Nodes whose hashes differ will hold shards on
 * each other's changes until their migrations meet.
 */
export function computeSchemaHash(db: Database, tables: readonly string[]): string {
  const h = createHash('sha256');
  for (const table of [...tables].sort()) {
    const cols = (db.prepare(`PRAGMA table_xinfo(${quoteIdent(table)})`).all() as ColumnRow[])
      .filter((c) => c.hidden !== 1)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    h.update(table);
    for (const c of cols) h.update(`|${c.name}:${c.type}:${c.notnull !== 0}:${c.pk > 0}`);
    h.update('\n');
  }
  return h.digest('hex');
}
