/**
 * Turns a verified snapshot file into exactly what the live database must
 * become, before and during the swap (synchronous SQLite work):
 * - `prepareRestoreFile` (snapshot worker, before the swap): the live page
 *   size and capture installed, so no application write is ever uncaptured,
 *   not even right after the swap;
 * - `carryOverLocalState` (under the swap's write lock, when nothing can
 *   change any more): everything of this node that is not in the snapshot and
 *   must survive it: changes not yet published (a write that slipped in after
 *   the publisher caught up), changes refused as too big, the outbox with its
 *   batch sequences, dead letters, and the id counters of the logs.
 */
import Database from 'better-sqlite3';
import { installCapture } from '../cdc/capture-installer.ts';
import {
  DEAD_LETTERS,
  GLOBAL_LOG,
  INTERNAL_TABLES,
  OUTBOX,
  PREFIX,
  quoteIdent as q,
  quoteString,
} from '../cdc/names.ts';
import { TableFilter } from '../cdc/table-filter.ts';

function tableExists(db: Database.Database, name: string, schema = 'main'): boolean {
  return (
    db.prepare(`SELECT 1 FROM ${schema}.sqlite_schema WHERE type = 'table' AND name = ?`).get(name) !==
    undefined
  );
}

/**
 * Changes of this node not published yet: rows of the global change log, all
 * of them or those up to global id `upToId` (changes captured by then).
 */
export function unpublishedChanges(db: Database.Database, upToId = Number.MAX_SAFE_INTEGER): number {
  if (!tableExists(db, GLOBAL_LOG)) return 0;
  return db
    .prepare(`SELECT count(*) FROM ${q(GLOBAL_LOG)} WHERE id <= ?`)
    .pluck()
    .get(upToId) as number;
}

/** The newest global change id handed out so far (0 = none). */
export function lastGlobalId(db: Database.Database): number {
  if (!tableExists(db, GLOBAL_LOG)) return 0;
  const fromLog =
    (db
      .prepare(`SELECT max(id) FROM ${q(GLOBAL_LOG)}`)
      .pluck()
      .get() as number | null) ?? 0;
  return fromLog;
}

export interface PrepareRestoreOptions {
  /** The verified snapshot file; modified in place. */
  readonly path: string;
  readonly liveDbPath: string;
  readonly busyTimeoutMs: number;
  readonly includeTables: readonly string[];
  readonly excludeTables: readonly string[];
  /** `publish`: whether triggers capture writes (false on read replicas). */
  readonly captureWrites: boolean;
}

/** Prepares the snapshot file at `path` for the swap. Idempotent. */
export function prepareRestoreFile(options: PrepareRestoreOptions): void {
  const live = new Database(options.liveDbPath, {
    readonly: true,
    fileMustExist: true,
    timeout: options.busyTimeoutMs,
  });
  let pageSize: number;
  try {
    pageSize = live.pragma('page_size', { simple: true }) as number;
  } finally {
    live.close();
  }
  const db = new Database(options.path, { fileMustExist: true });
  try {
    db.pragma('journal_mode = DELETE');
    db.pragma('synchronous = OFF');
    // The backup API cannot change the page size of a database in WAL mode: match it here.
    if ((db.pragma('page_size', { simple: true }) as number) !== pageSize) {
      db.pragma(`page_size = ${pageSize}`);
      db.exec('VACUUM');
    }
    installCapture(db, new TableFilter(options.includeTables, options.excludeTables), {
      captureWrites: options.captureWrites,
    });
  } finally {
    db.close();
  }
}

export interface CarryOverOptions {
  /** The prepared snapshot file (the swap's source). */
  readonly sourcePath: string;
  readonly liveDbPath: string;
  /** The snapshot's highest applied batch sequence of this node, per shard ("1", "2", …). */
  readonly ownOriginSeqs: Readonly<Record<string, number>>;
}

export interface CarriedOver {
  /** Changes not yet published (state 0) and refused ones (state 2). */
  readonly changes: number;
  readonly deadLetters: number;
  /** Change-log columns of the live database that the snapshot's tables no longer have. */
  readonly droppedColumns: readonly string[];
}

/**
 * Copies this node's local replication state from the live database into the
 * source file, replacing what an earlier call copied. Meant to run while the
 * swap holds the live write lock, so what it copies is final; writing the
 * source restarts the backup, which then copies the result.
 * Ids are kept, so the running publisher's changes in memory and in flight
 * still match their rows; id counters continue above the live ones.
 */
export function carryOverLocalState(options: CarryOverOptions): CarriedOver {
  const db = new Database(options.sourcePath, { fileMustExist: true });
  try {
    db.pragma('journal_mode = DELETE');
    db.pragma('synchronous = OFF');
    db.exec(`ATTACH ${quoteString(options.liveDbPath)} AS live`);
    try {
      return db.transaction(() => copyLocalState(db, options.ownOriginSeqs))();
    } finally {
      db.exec('DETACH live');
    }
  } finally {
    db.close();
  }
}

function columns(db: Database.Database, schema: string, table: string): string[] {
  return (db.prepare(`PRAGMA ${schema}.table_info(${q(table)})`).all() as { name: string }[]).map(
    (c) => c.name,
  );
}

function copyLocalState(db: Database.Database, ownOriginSeqs: Readonly<Record<string, number>>): CarriedOver {
  let changes = 0;
  const droppedColumns: string[] = [];
  const internal = new Set<string>(INTERNAL_TABLES); // the global log matches the pattern too
  const liveLogs = (
    db
      .prepare("SELECT name FROM live.sqlite_schema WHERE type = 'table' AND name GLOB ?")
      .pluck()
      .all(`${PREFIX}*_change_log`) as string[]
  ).filter((name) => !internal.has(name));
  for (const log of liveLogs) {
    if (!tableExists(db, log)) {
      // The snapshot has no such table any more: its unpublished changes still go out.
      const sql = db.prepare('SELECT sql FROM live.sqlite_schema WHERE name = ?').pluck().get(log) as string;
      db.exec(sql);
    }
    const target = new Set(columns(db, 'main', log));
    const shared = columns(db, 'live', log).filter((c) => {
      if (target.has(c)) return true;
      droppedColumns.push(`${log}.${c}`);
      return false;
    });
    const cols = shared.map(q).join(', ');
    db.exec(`DELETE FROM main.${q(log)}`);
    changes += db
      .prepare(`INSERT INTO main.${q(log)} (${cols}) SELECT ${cols} FROM live.${q(log)} WHERE state <> 1`)
      .run().changes;
  }
  db.exec(`DELETE FROM main.${q(GLOBAL_LOG)}`);
  if (tableExists(db, GLOBAL_LOG, 'live')) {
    db.exec(`INSERT INTO main.${q(GLOBAL_LOG)} SELECT * FROM live.${q(GLOBAL_LOG)}`);
  }

  // Batches of this node that receivers already applied must never be numbered again, or
  // receivers would drop the next ones as duplicates; a batch in flight keeps its number.
  db.exec(`DELETE FROM main.${q(OUTBOX)}`);
  if (tableExists(db, OUTBOX, 'live')) {
    db.exec(
      `INSERT INTO main.${q(OUTBOX)} SELECT shard, seq, last_global_id, payload FROM live.${q(OUTBOX)}`,
    );
  }
  const raise = db.prepare(
    `INSERT INTO main.${q(OUTBOX)} (shard, seq, last_global_id, payload) VALUES (?, ?, NULL, NULL) ` +
      'ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq WHERE payload IS NULL AND seq < excluded.seq',
  );
  for (const [shard, seq] of Object.entries(ownOriginSeqs)) raise.run(Number(shard), seq);

  // Dead letters are this node's record of messages that never applied (invariant 5).
  db.exec(`DELETE FROM main.${q(DEAD_LETTERS)}`);
  let deadLetters = 0;
  if (tableExists(db, DEAD_LETTERS, 'live')) {
    deadLetters = db
      .prepare(`INSERT INTO main.${q(DEAD_LETTERS)} SELECT * FROM live.${q(DEAD_LETTERS)}`)
      .run().changes;
  }

  // Ids continue above every id the live database handed out: the publisher's scan cursor
  // never skips a change made after the swap.
  if (tableExists(db, 'sqlite_sequence', 'live')) {
    const counters = db
      .prepare('SELECT name, seq FROM live.sqlite_sequence WHERE name GLOB ?')
      .all(`${PREFIX}*`) as {
      name: string;
      seq: number;
    }[];
    for (const { name, seq } of counters) {
      if (!tableExists(db, name)) continue;
      const updated = db
        .prepare('UPDATE main.sqlite_sequence SET seq = max(seq, ?) WHERE name = ?')
        .run(seq, name).changes;
      if (updated === 0)
        db.prepare('INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)').run(name, seq);
    }
  }
  return { changes, deadLetters, droppedColumns };
}
