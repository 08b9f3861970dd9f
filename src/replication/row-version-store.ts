import type { Database, Statement } from 'better-sqlite3';
import { CONFLICTS, PARKED, quoteIdent as q, ROW_VERSIONS } from '../cdc/names.ts';

/** What the replicated-state index holds for one row key. */
export const RowState = { live: 0, deleted: 1, displaced: 2 } as const;
export type RowState = (typeof RowState)[keyof typeof RowState];

export interface IndexEntry {
  readonly version: number;
  readonly origin: number;
  /** Hash of the row's values (RowDigest); null unless live. */
  readonly hash: bigint | null;
  readonly state: RowState;
}

/** Why a change was parked: waiting for this row's local writes to come back versioned, or displaced by a UNIQUE value. */
export const ParkKind = { deferred: 1, displaced: 2 } as const;
export type ParkKind = (typeof ParkKind)[keyof typeof ParkKind];

export interface ParkedChange {
  readonly pk: Buffer;
  readonly version: number;
  readonly origin: number;
  readonly type: 'insert' | 'update' | 'delete';
  /** The row's values (row-codec CBOR). */
  readonly row: Uint8Array;
}

export interface ConflictEntry {
  readonly table: string;
  readonly pk: Uint8Array;
  readonly reason: 'superseded' | 'displaced' | 'refused';
  readonly lost: {
    readonly version: number;
    readonly origin: number;
    readonly type: string;
    readonly row: Uint8Array | null;
  };
  readonly won: { readonly version: number; readonly origin: number };
  /** Why, when the reason alone does not say (a refusal's error). */
  readonly detail?: string;
}

/**
 * SQL access to the replicated-state index, the parked changes and the
 * conflict log (docs/design.md, invariant 3). Runs inside the caller's
 * transaction; statements are prepared once.
 */
export class RowVersionStore {
  readonly #get: Statement;
  readonly #put: Statement;
  readonly #park: Statement;
  readonly #parked: Statement;
  readonly #unpark: Statement;
  readonly #displacedOf: Statement;
  readonly #anyDisplaced: Statement;
  readonly #anyParked: Statement;
  readonly #conflict: Statement;

  constructor(db: Database) {
    this.#get = db
      .prepare(`SELECT version, origin, hash, state FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND pk = ?`)
      .raw(true);
    this.#get.safeIntegers(true);
    this.#put = db.prepare(
      `INSERT INTO ${q(ROW_VERSIONS)} (tbl, pk, version, origin, hash, state) VALUES (?, ?, ?, ?, ?, ?) ` +
        `ON CONFLICT (tbl, pk) DO UPDATE SET version = excluded.version, origin = excluded.origin, ` +
        `hash = excluded.hash, state = excluded.state`,
    );
    this.#park = db.prepare(
      `INSERT OR REPLACE INTO ${q(PARKED)} (tbl, pk, kind, version, origin, type, row) VALUES (?, ?, ?, ?, ?, ?, ?)`,
    );
    this.#parked = db
      .prepare(
        `SELECT pk, version, origin, type, row FROM ${q(PARKED)} WHERE tbl = ? AND pk = ? AND kind = ?`,
      )
      .raw(true);
    this.#unpark = db.prepare(`DELETE FROM ${q(PARKED)} WHERE tbl = ? AND pk = ? AND kind = ?`);
    this.#displacedOf = db
      .prepare(
        `SELECT pk, version, origin, type, row FROM ${q(PARKED)} WHERE tbl = ? AND kind = ${ParkKind.displaced} ` +
          `ORDER BY version DESC, origin DESC`,
      )
      .raw(true);
    this.#anyDisplaced = db
      .prepare(`SELECT 1 FROM ${q(PARKED)} WHERE tbl = ? AND kind = ${ParkKind.displaced} LIMIT 1`)
      .pluck();
    this.#anyParked = db.prepare(`SELECT 1 FROM ${q(PARKED)} WHERE kind = ? LIMIT 1`).pluck();
    this.#conflict = db.prepare(
      `INSERT INTO ${q(CONFLICTS)} (at, tbl, pk, reason, lost_version, lost_origin, lost_type, lost_row, won_version, won_origin, detail) ` +
        `VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
  }

  get(table: string, pk: Uint8Array): IndexEntry | undefined {
    const r = this.#get.get(table, pk) as [bigint, bigint, bigint | null, bigint] | undefined;
    if (r === undefined) return undefined;
    return { version: Number(r[0]), origin: Number(r[1]), hash: r[2], state: Number(r[3]) as RowState };
  }

  put(table: string, pk: Uint8Array, e: IndexEntry): void {
    this.#put.run(table, pk, e.version, e.origin, e.hash, e.state);
  }

  park(table: string, kind: ParkKind, c: ParkedChange): void {
    this.#park.run(table, c.pk, kind, c.version, c.origin, c.type, c.row);
  }

  parked(table: string, pk: Uint8Array, kind: ParkKind): ParkedChange | undefined {
    const r = this.#parked.get(table, pk, kind) as unknown[] | undefined;
    return r === undefined ? undefined : toParked(r);
  }

  unpark(table: string, pk: Uint8Array, kind: ParkKind): void {
    this.#unpark.run(table, pk, kind);
  }

  /** Rows of `table` displaced by a UNIQUE value, newest version first. */
  displacedOf(table: string): ParkedChange[] {
    return (this.#displacedOf.all(table) as unknown[][]).map(toParked);
  }

  hasDisplaced(table: string): boolean {
    return this.#anyDisplaced.get(table) !== undefined;
  }

  /** True when any change of any table is parked for this reason. */
  hasParked(kind: ParkKind): boolean {
    return this.#anyParked.get(kind) !== undefined;
  }

  conflict(c: ConflictEntry, at: number): void {
    this.#conflict.run(
      at,
      c.table,
      c.pk,
      c.reason,
      c.lost.version,
      c.lost.origin,
      c.lost.type,
      c.lost.row,
      c.won.version,
      c.won.origin,
      c.detail ?? null,
    );
  }
}

/**
 * Bounds the conflict log: entries older than `olderThan` (ms since the epoch) go,
 * then the oldest beyond `maxRows`. Returns how many were deleted.
 */
export function pruneConflicts(db: Database, limits: { olderThan: number; maxRows: number }): number {
  // Read first: a DELETE takes the write lock even when it matches nothing, and this runs every
  // cleanup interval; a client with a busy timeout of 0 that met it would fail "database is locked".
  const oldest = db
    .prepare(`SELECT min(at) FROM ${q(CONFLICTS)}`)
    .pluck()
    .get() as number | null;
  if (oldest === null) return 0; // empty
  const cut = db
    .prepare(`SELECT id FROM ${q(CONFLICTS)} ORDER BY id DESC LIMIT 1 OFFSET ?`)
    .pluck()
    .get(limits.maxRows) as number | undefined;
  let n = 0;
  if (oldest < limits.olderThan)
    n += db.prepare(`DELETE FROM ${q(CONFLICTS)} WHERE at < ?`).run(limits.olderThan).changes;
  if (cut !== undefined) n += db.prepare(`DELETE FROM ${q(CONFLICTS)} WHERE id <= ?`).run(cut).changes;
  return n;
}

/** Losing versions written to the conflict log in the last hour (a read: no lock). */
export function recentConflicts(db: Database, now = Date.now()): number {
  return Number(
    db
      .prepare(`SELECT count(*) FROM ${q(CONFLICTS)} WHERE at >= ?`)
      .pluck()
      .get(now - 3_600_000) ?? 0,
  );
}

/** The newest version in the index (0 if none): the clock starts past it. */
export function maxIndexedVersion(db: Database): number {
  return Number(
    (db
      .prepare(`SELECT max(version) FROM ${q(ROW_VERSIONS)}`)
      .pluck()
      .get() as number | null) ?? 0,
  );
}

function toParked(r: unknown[]): ParkedChange {
  return {
    pk: r[0] as Buffer,
    version: Number(r[1]),
    origin: Number(r[2]),
    type: r[3] as ParkedChange['type'],
    row: r[4] as Uint8Array,
  };
}
