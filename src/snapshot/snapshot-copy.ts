/**
 * The seed's snapshot steps on SQLite, synchronous (run in the snapshot
 * worker, never on the main thread): `VACUUM INTO` a temporary file, remove
 * our capture from the copy, compact it, and read the facts the manifest needs.
 */
import Database from 'better-sqlite3';
import {
  CAPTURED_TABLES,
  DEAD_LETTERS,
  GLOBAL_LOG,
  ORIGIN_SEQS,
  OUTBOX,
  POSITIONS,
  PREFIX,
  quoteIdent as q,
  quoteString,
  REPLAY_GUARD,
} from '../cdc/names.ts';
import type { OriginSeq } from './snapshot-manifest.ts';

export interface SnapshotCopyFacts {
  /** Stream sequence applied per shard, as stored in the copy. */
  readonly positions: Record<string, number>;
  readonly originSeqs: OriginSeq[];
  readonly schemaSql: string;
}

/**
 * Our tables that a snapshot leaves out: each describes only the node that
 * took it (its pending changes, batches, dead letters, capture state), and a
 * restoring node carries its own over (`prepare-restore-file.ts`). Every other
 * table of ours stays, so a table added later (positions, origin sequences,
 * replicated-state index, conflicts) travels with the rows it describes unless
 * it is named here: `VACUUM INTO` reads one consistent snapshot and the applier
 * writes them in the same transaction as the rows (invariant 4).
 */
const DROPPED_TABLES = new Set<string>([GLOBAL_LOG, REPLAY_GUARD, OUTBOX, DEAD_LETTERS, CAPTURED_TABLES]);

/** True for the tables `DROPPED_TABLES` names, every table's change log and its OR REPLACE staging table. */
function isDroppedTable(name: string): boolean {
  return (
    DROPPED_TABLES.has(name) ||
    (name.startsWith(PREFIX) && (name.endsWith('_change_log') || name.endsWith('_replaced_rows')))
  );
}

/**
 * Compaction after removing capture runs only when the freed pages are a large
 * share of the copy: it costs a second full rewrite (as long as the `VACUUM
 * INTO`), while freed pages are zeroed (`secure_delete`) and compress to almost
 * nothing; a restored node reuses them.
 */
const COMPACT_MIN_FREE_SHARE = 0.25;
const COMPACT_MIN_FREE_BYTES = 1024 * 1024;

/** Bytes a copy of the database will take: its used pages (free pages are not copied by VACUUM INTO). */
export function estimateCopyBytes(dbPath: string, busyTimeoutMs: number): number {
  const db = new Database(dbPath, { readonly: true, fileMustExist: true, timeout: busyTimeoutMs });
  try {
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    const pages = db.pragma('page_count', { simple: true }) as number;
    const free = db.pragma('freelist_count', { simple: true }) as number;
    return (pages - free) * pageSize;
  } finally {
    db.close();
  }
}

/**
 * Writes a consistent copy of `dbPath` to `outPath` (which must not exist)
 * without HarmonyLite's triggers and the tables `DROPPED_TABLES` names, keeping
 * the others (stream positions, origin sequences, ...) that match its data.
 * The copy is in rollback-journal mode.
 */
export function writeSnapshotCopy(options: {
  readonly dbPath: string;
  readonly outPath: string;
  readonly busyTimeoutMs: number;
}): SnapshotCopyFacts {
  const src = new Database(options.dbPath, {
    readonly: true,
    fileMustExist: true,
    timeout: options.busyTimeoutMs,
  });
  try {
    // The copy is a scratch file: no fsync of it is worth waiting for.
    src.pragma('synchronous = OFF');
    src.exec(`VACUUM INTO ${quoteString(options.outPath)}`);
  } finally {
    src.close();
  }

  const copy = new Database(options.outPath, { fileMustExist: true });
  try {
    copy.pragma('journal_mode = OFF');
    copy.pragma('synchronous = OFF');
    copy.pragma('secure_delete = ON');
    stripCapture(copy);
    const facts = readSnapshotFacts(copy);
    const pageSize = copy.pragma('page_size', { simple: true }) as number;
    const pages = copy.pragma('page_count', { simple: true }) as number;
    const freeBytes = (copy.pragma('freelist_count', { simple: true }) as number) * pageSize;
    if (freeBytes >= COMPACT_MIN_FREE_BYTES && freeBytes >= COMPACT_MIN_FREE_SHARE * pages * pageSize) {
      copy.exec('VACUUM');
    }
    return facts;
  } finally {
    copy.close();
  }
}

/** Drops our triggers, views and the dropped tables, in one transaction. */
function stripCapture(db: Database.Database): void {
  const ours = db
    .prepare(
      "SELECT type, name FROM sqlite_schema WHERE name GLOB ? AND type IN ('trigger', 'view', 'table')",
    )
    .all(`${PREFIX}*`) as { type: 'trigger' | 'view' | 'table'; name: string }[];
  db.transaction(() => {
    // Triggers first: dropping a table they watch would drop them anyway, but ours may watch user tables.
    for (const o of ours) if (o.type === 'trigger') db.exec(`DROP TRIGGER IF EXISTS ${q(o.name)}`);
    for (const o of ours) if (o.type === 'view') db.exec(`DROP VIEW IF EXISTS ${q(o.name)}`);
    for (const o of ours) {
      if (o.type === 'table' && isDroppedTable(o.name)) db.exec(`DROP TABLE IF EXISTS ${q(o.name)}`);
    }
  })();
}

function tableExists(db: Database.Database, name: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

/** The facts of a snapshot copy (also of a downloaded one, to check them against its manifest). */
export function readSnapshotFacts(db: Database.Database): SnapshotCopyFacts {
  const positions: Record<string, number> = {};
  if (tableExists(db, POSITIONS)) {
    const rows = db.prepare(`SELECT shard, stream_seq FROM ${q(POSITIONS)} ORDER BY shard`).all() as {
      shard: number;
      stream_seq: number;
    }[];
    for (const r of rows) positions[String(r.shard)] = r.stream_seq;
  }
  const originSeqs: OriginSeq[] = tableExists(db, ORIGIN_SEQS)
    ? (db
        .prepare(`SELECT origin, shard, seq FROM ${q(ORIGIN_SEQS)} ORDER BY origin, shard`)
        .all() as OriginSeq[])
    : [];
  const schema = db
    .prepare(
      'SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT GLOB ? AND name NOT GLOB ? ORDER BY rowid',
    )
    .pluck()
    .all(`${PREFIX}*`, 'sqlite_*') as string[];
  return { positions, originSeqs, schemaSql: schema.join(';\n') };
}
