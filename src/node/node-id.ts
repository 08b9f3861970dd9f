import { randomInt } from 'node:crypto';
import type Database from 'better-sqlite3';
import { NODE_IDENTITY, quoteIdent as q } from '../cdc/names.ts';
import { openDatabase } from '../sqlite/open-database.ts';

/** Largest generated id: ids fit a signed 32-bit integer (HarmonyLite's configs and tools). */
const MAX_GENERATED_ID = 0x7fffffff;

/**
 * The default `node_id` (config `node_id = 0`): a random id generated at the
 * node's first start and stored in the database, so it stays the same for
 * that database across restarts and moves, and cloned machines (same
 * machine-id, same path) do not share it, as a hash of both did. A copied
 * database file carries its id: two live nodes started from copies are
 * refused by the node registry (`node-registration.ts`); `-cleanup` removes the
 * table, and the next start generates a new id.
 */
export function ensureNodeId(db: Database.Database): number {
  return db
    .transaction(() => {
      db.exec(
        `CREATE TABLE IF NOT EXISTS ${q(NODE_IDENTITY)} (id INTEGER NOT NULL, created_at INTEGER NOT NULL)`,
      );
      const id = readNodeId(db);
      if (id !== undefined) return id;
      const generated = randomInt(1, MAX_GENERATED_ID + 1);
      db.prepare(`INSERT INTO ${q(NODE_IDENTITY)} (id, created_at) VALUES (?, ?)`).run(generated, Date.now());
      return generated;
    })
    .immediate();
}

/** Writes `id` back after the database content was replaced (a snapshot restore drops the table). */
export function keepNodeId(db: Database.Database, id: number): void {
  db.transaction(() => {
    db.exec(
      `CREATE TABLE IF NOT EXISTS ${q(NODE_IDENTITY)} (id INTEGER NOT NULL, created_at INTEGER NOT NULL)`,
    );
    if (readNodeId(db) === id) return;
    db.exec(`DELETE FROM ${q(NODE_IDENTITY)}`);
    db.prepare(`INSERT INTO ${q(NODE_IDENTITY)} (id, created_at) VALUES (?, ?)`).run(id, Date.now());
  }).immediate();
}

/** The stored id; undefined before the node's first start (or after `-cleanup`). */
export function readNodeId(db: Database.Database): number | undefined {
  const exists = db
    .prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?")
    .pluck()
    .get(NODE_IDENTITY);
  if (exists === undefined) return undefined;
  const v = db
    .prepare(`SELECT id FROM ${q(NODE_IDENTITY)} LIMIT 1`)
    .pluck()
    .get() as number | undefined;
  return v;
}

/**
 * The id a node on `dbPath` runs with: the configured one, else the stored one
 * (generated first when `create`; undefined when absent and not created).
 */
export function resolveNodeId(
  configured: number,
  dbPath: string,
  options: { busyTimeoutMs: number; create: boolean },
): number | undefined {
  if (configured !== 0) return configured;
  const db = openDatabase(dbPath, { busyTimeoutMs: options.busyTimeoutMs, readonly: !options.create });
  try {
    return options.create ? ensureNodeId(db) : readNodeId(db);
  } finally {
    db.close();
  }
}
