import type { Database } from 'better-sqlite3';
import type { ChangeType } from '../codec/change-record.ts';
import type { RowDigest } from '../codec/row-digest.ts';
import { decodeRow, encodeRow, rowOf } from '../codec/row-codec.ts';
import type { SqlValue, WireValue } from '../codec/sql-value.ts';
import { newer, type HybridClock } from './hybrid-clock.ts';
import { ParkKind, RowState, RowVersionStore, type IndexEntry } from './row-version-store.ts';
import type { KeyValue, TableApplier } from './table-applier.ts';

export interface ChangeResolverOptions {
  readonly nodeId: number;
  readonly clock: HybridClock;
  readonly digest: RowDigest;
  /**
   * The application writes to this database and its writes are captured
   * (`publish = true`): a row whose values differ from the index holds local
   * writes not yet versioned, which count as newer than anything received.
   */
  readonly localWrites: boolean;
  /** A version further ahead of this node's wall clock is applied, and counted (`aheadOfClock`). */
  readonly maxClockSkewMs: number;
}

/** What happened to the changes given to `apply` since the counts were last reset. */
export interface ResolveCounts {
  /** Written, or found already in place (own changes coming back). */
  applied: number;
  /** Older than the row's version: skipped. */
  superseded: number;
  /** Parked until this row's local writes come back versioned. */
  deferred: number;
  /** Rows (incoming or present) that lost a UNIQUE value to a newer row. */
  displaced: number;
  /** Entries written to the conflict log. */
  conflicts: number;
  /** Versions more than `maxClockSkewMs` ahead of this node's clock. */
  aheadOfClock: number;
  /** Changes refused by an application trigger or constraint here: in the conflict log. */
  refused: number;
}

interface Incoming {
  readonly pk: Buffer;
  readonly type: ChangeType;
  readonly row: Record<string, WireValue>;
  readonly version: number;
  readonly origin: number;
}

/**
 * Last writer wins by version, whatever the order of arrival (docs/design.md,
 * invariant 3). For each row key the replicated-state index keeps the newest
 * version applied; an incoming change is applied only if it is newer, and a
 * delete leaves a tombstone, so no late older write resurrects a row.
 *
 * Local writes are versioned when they are published, so until a local write
 * comes back from its stream the row's values differ from the index's hash: the
 * row is "ahead". A remote change to such a row is parked, not applied (the local
 * write will carry a newer version, or, if it was versioned before that change
 * arrived, the parked change is applied when the local one comes back older).
 * A change of this node coming back is applied only to the index when the row
 * already holds it, so later local writes are never rolled back.
 *
 * A row that needs a UNIQUE value another row holds: the newer version keeps the
 * value, the older row is parked as displaced and logged as a conflict; a
 * displaced row comes back as soon as no newer row holds its values. The
 * outcome is a function of the versions alone: a row is kept exactly when no
 * newer kept row collides with it.
 */
export class ChangeResolver {
  readonly #store: RowVersionStore;
  readonly #options: ChangeResolverOptions;
  #restoring = false;
  #now = 0;
  /** False when no change is parked as deferred: the per-row lookup is skipped. Unknown until asked. */
  #anyDeferred: boolean | undefined;
  readonly counts: ResolveCounts = {
    applied: 0,
    superseded: 0,
    deferred: 0,
    displaced: 0,
    conflicts: 0,
    aheadOfClock: 0,
    refused: 0,
  };

  constructor(db: Database, options: ChangeResolverOptions) {
    this.#store = new RowVersionStore(db);
    this.#options = options;
  }

  /** A new apply transaction: counts from zero, and what is parked is asked again. */
  resetCounts(): void {
    for (const k of Object.keys(this.counts) as (keyof ResolveCounts)[]) this.counts[k] = 0;
    this.#anyDeferred = undefined;
  }

  apply(
    table: TableApplier,
    type: ChangeType,
    row: Record<string, WireValue>,
    version: number,
    origin: number,
  ): void {
    const { clock, digest, localWrites, nodeId, maxClockSkewMs } = this.#options;
    this.#now = Date.now();
    const key = table.keyOf(row);
    const c: Incoming = { pk: digest.key(key, table.schema.keyFold), type, row, version, origin };
    clock.observe(version);
    if (origin !== nodeId && clock.aheadMs(version) > maxClockSkewMs) this.counts.aheadOfClock++;
    const name = table.schema.name;
    const idx = this.#store.get(name, c.pk);
    if (idx !== undefined && !newer(version, origin, idx.version, idx.origin)) {
      this.counts.superseded++;
      if (origin !== idx.origin) this.#conflict(name, 'superseded', c, idx);
      return;
    }
    if (type !== 'delete' && origin !== nodeId && (idx === undefined || idx.state !== RowState.live)) {
      // No live version here: the row is absent unless a local write (or a displaced row's key)
      // holds it. An insert that finds nothing in its way is exactly what the full path would do.
      // Not for own changes: their row is almost always in place already, the insert wasted.
      const written = table.insertNew(row);
      if (written !== undefined) {
        if (table.hasUnique) this.#store.unpark(name, c.pk, ParkKind.displaced);
        const hash = digest.hash(table.layout, written);
        this.#store.put(name, c.pk, { version, origin, hash, state: RowState.live });
        this.counts.applied++;
        return;
      }
    }
    const current = localWrites || table.hasUnique ? table.read(key) : undefined;
    if (localWrites && !this.#isClean(table, current, idx)) {
      // The row holds this very change (a snapshot taken with it pending on its origin), or it is
      // this node's own change coming back: only the index moves. Otherwise the local writes go first.
      if (origin === nodeId || this.#holds(table, current, c)) this.#recordOnly(table, c, key);
      else this.#defer(name, c);
      return;
    }
    this.#applyNewer(table, c, key, current);
  }

  /** The row holds exactly what the index says: no local write is waiting to be versioned. */
  #isClean(table: TableApplier, current: SqlValue[] | undefined, idx: IndexEntry | undefined): boolean {
    if (idx === undefined || idx.state !== RowState.live) return current === undefined;
    return current !== undefined && this.#options.digest.hash(table.layout, current) === idx.hash;
  }

  #defer(table: string, c: Incoming): void {
    const waiting = this.#store.parked(table, c.pk, ParkKind.deferred);
    if (waiting !== undefined) {
      if (!newer(c.version, c.origin, waiting.version, waiting.origin)) {
        this.counts.superseded++;
        this.#conflict(table, 'superseded', c, waiting);
        return;
      }
      this.#conflict(table, 'superseded', { ...waiting, row: decodeRow(waiting.row) }, c);
    }
    this.#store.park(table, ParkKind.deferred, { ...c, row: encodeRow(c.row) });
    this.#anyDeferred = true;
    this.counts.deferred++;
  }

  /** True when the row is exactly what the change would make it. */
  #holds(table: TableApplier, current: SqlValue[] | undefined, c: Incoming): boolean {
    if (c.type === 'delete') return current === undefined;
    const { digest } = this.#options;
    return (
      current !== undefined &&
      digest.hash(table.layout, current) === digest.hash(table.layout, table.valuesOf(c.row))
    );
  }

  /**
   * A change newer than the index while the row is ahead of it: this node's own change coming
   * back, or one the row already holds. The index takes it; the row is not written.
   */
  #recordOnly(table: TableApplier, c: Incoming, key: KeyValue[]): void {
    const { digest } = this.#options;
    const name = table.schema.name;
    if (c.type === 'delete') {
      this.#store.put(name, c.pk, {
        version: c.version,
        origin: c.origin,
        hash: null,
        state: RowState.deleted,
      });
    } else {
      // The row holds this change, or a later local write (then it stays ahead of the index until that one comes back).
      const hash = digest.hash(table.layout, table.valuesOf(c.row));
      this.#store.put(name, c.pk, { version: c.version, origin: c.origin, hash, state: RowState.live });
    }
    this.counts.applied++;
    this.#resolveDeferred(table, c.pk, key);
    if (table.hasUnique && this.#store.hasDisplaced(name)) this.#restoreDisplaced(table);
  }

  /** A change parked for this row: applied once the row's local writes are versioned, or dropped when they beat it. */
  #resolveDeferred(table: TableApplier, pk: Buffer, key: KeyValue[]): void {
    const name = table.schema.name;
    this.#anyDeferred ??= this.#store.hasParked(ParkKind.deferred);
    if (!this.#anyDeferred) return;
    const d = this.#store.parked(name, pk, ParkKind.deferred);
    if (d === undefined) return;
    const idx = this.#store.get(name, pk);
    const parked: Incoming = { ...d, pk, row: decodeRow(d.row) };
    if (idx !== undefined && !newer(d.version, d.origin, idx.version, idx.origin)) {
      this.#store.unpark(name, pk, ParkKind.deferred);
      this.counts.superseded++;
      this.#conflict(name, 'superseded', parked, idx);
      return;
    }
    const current = table.read(key);
    if (!this.#isClean(table, current, idx)) return; // later local writes still to come back
    this.#store.unpark(name, pk, ParkKind.deferred);
    this.#applyNewer(table, parked, key, current);
  }

  #applyNewer(table: TableApplier, c: Incoming, key: KeyValue[], current: SqlValue[] | undefined): void {
    const { digest } = this.#options;
    const name = table.schema.name;
    if (table.hasUnique) this.#store.unpark(name, c.pk, ParkKind.displaced); // this key's register moves on
    if (c.type === 'delete') {
      const had = table.remove(key);
      this.#store.put(name, c.pk, {
        version: c.version,
        origin: c.origin,
        hash: null,
        state: RowState.deleted,
      });
      this.counts.applied++;
      if (had && table.hasUnique) this.#restoreDisplaced(table);
      return;
    }
    for (let attempt = 0; ; attempt++) {
      const out = table.write(c.row);
      if ('written' in out) {
        const hash = digest.hash(table.layout, out.written);
        this.#store.put(name, c.pk, { version: c.version, origin: c.origin, hash, state: RowState.live });
        this.counts.applied++;
        // A partial or expression UNIQUE index: SQLite's REPLACE removed the rows in the way (uncounted by key).
        if (out.replaced === true) this.counts.displaced++;
        if (current !== undefined && table.hasUnique) this.#restoreDisplaced(table);
        return;
      }
      const holders = this.#holders(table, out.holders);
      const winner = holders.find((h) => !this.#beats(c, h));
      if (winner !== undefined || attempt >= 3) {
        // This change loses its UNIQUE value: its key's register is the change, parked; the key's older row goes.
        if (current !== undefined) table.remove(key);
        this.#store.park(name, ParkKind.displaced, { ...c, row: encodeRow(c.row) });
        this.#store.put(name, c.pk, {
          version: c.version,
          origin: c.origin,
          hash: null,
          state: RowState.displaced,
        });
        this.counts.displaced++;
        const won = winner?.idx ?? { version: 0, origin: 0 };
        this.#conflict(name, 'displaced', c, won);
        if (current !== undefined) this.#restoreDisplaced(table);
        return;
      }
      for (const h of holders) this.#displace(table, h, c);
    }
  }

  #holders(table: TableApplier, keys: readonly (readonly SqlValue[])[]): Holder[] {
    const { digest } = this.#options;
    return keys.map((key) => {
      const pk = digest.key(key, table.schema.keyFold);
      const idx = this.#store.get(table.schema.name, pk);
      const row = table.read(key);
      return { key, pk, idx, row, clean: this.#options.localWrites ? this.#isClean(table, row, idx) : true };
    });
  }

  /** True when `c` is newer than the holder's row (a row ahead of the index counts as newest). */
  #beats(c: { version: number; origin: number }, h: Holder): boolean {
    if (!h.clean) return false;
    if (h.idx === undefined) return true; // never replicated and not written here: nothing to keep it
    return newer(c.version, c.origin, h.idx.version, h.idx.origin);
  }

  #displace(table: TableApplier, h: Holder, by: { version: number; origin: number }): void {
    const name = table.schema.name;
    const version = h.idx?.version ?? 0;
    const origin = h.idx?.origin ?? 0;
    const row = rowOf(table.columns, h.row ?? []);
    this.#store.park(name, ParkKind.displaced, {
      pk: h.pk,
      version,
      origin,
      type: 'update',
      row: encodeRow(row),
    });
    table.remove(h.key);
    this.#store.put(name, h.pk, { version, origin, hash: null, state: RowState.displaced });
    this.counts.displaced++;
    this.#conflict(name, 'displaced', { pk: h.pk, type: 'update', row, version, origin }, by);
  }

  /** Brings back displaced rows that no newer row collides with any more, newest first, until nothing changes. */
  #restoreDisplaced(table: TableApplier): void {
    if (this.#restoring) return;
    this.#restoring = true;
    const name = table.schema.name;
    try {
      for (let round = 0; round < 100; round++) {
        let progressed = false;
        for (const d of this.#store.displacedOf(name)) {
          const idx = this.#store.get(name, d.pk);
          if (idx?.state !== RowState.displaced || idx.version !== d.version || idx.origin !== d.origin) {
            this.#store.unpark(name, d.pk, ParkKind.displaced); // its key moved on since
            continue;
          }
          const row = decodeRow(d.row);
          const key = table.keyOf(row);
          if (table.read(key) !== undefined) continue; // a local write took the key: its version decides
          for (let attempt = 0; attempt < 3; attempt++) {
            const out = table.write(row);
            if ('written' in out) {
              this.#store.unpark(name, d.pk, ParkKind.displaced);
              const hash = this.#options.digest.hash(table.layout, out.written);
              this.#store.put(name, d.pk, { ...idx, hash, state: RowState.live });
              progressed = true;
              break;
            }
            const holders = this.#holders(table, out.holders);
            if (!holders.every((h) => this.#beats(d, h))) break;
            for (const h of holders) this.#displace(table, h, d);
          }
        }
        if (!progressed) return;
      }
    } finally {
      this.#restoring = false;
    }
  }

  /**
   * A change this node's database refused (an application trigger, a constraint): the row
   * stays as it is, the change goes to the conflict log with the error, as the loser
   * against the row's current version.
   */
  refuse(
    table: TableApplier,
    type: ChangeType,
    row: Record<string, WireValue>,
    version: number,
    origin: number,
    detail: string,
  ): void {
    this.#now = Date.now();
    const pk = this.#options.digest.key(table.keyOf(row), table.schema.keyFold);
    const idx = this.#store.get(table.schema.name, pk);
    this.#conflict(
      table.schema.name,
      'refused',
      { pk, type, row, version, origin },
      idx ?? { version: 0, origin: 0 },
      detail,
    );
    this.counts.refused++;
  }

  #conflict(
    table: string,
    reason: 'superseded' | 'displaced' | 'refused',
    lost: { pk: Uint8Array; type: string; row: Record<string, WireValue>; version: number; origin: number },
    won: { version: number; origin: number },
    detail?: string,
  ): void {
    this.#store.conflict(
      {
        table,
        pk: lost.pk,
        reason,
        lost: { version: lost.version, origin: lost.origin, type: lost.type, row: encodeRow(lost.row) },
        won: { version: won.version, origin: won.origin },
        ...(detail === undefined ? {} : { detail }),
      },
      this.#now,
    );
    this.counts.conflicts++;
  }
}

interface Holder {
  readonly key: readonly SqlValue[];
  readonly pk: Buffer;
  readonly idx: IndexEntry | undefined;
  readonly row: SqlValue[] | undefined;
  readonly clean: boolean;
}
