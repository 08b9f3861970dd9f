import type { Database, Statement } from 'better-sqlite3';
import { changeLogTable, GLOBAL_LOG, OUTBOX, quoteIdent as q } from '../cdc/names.ts';
import type { PendingChange } from '../changelog/changelog-scanner.ts';
import { whenWriteLockFree } from './write-lock-poll.ts';
import type { WriterQueue } from './writer-queue.ts';

/** A batch persisted before it is published, so a retry after a crash is byte-identical (invariant 2). */
export interface OutboxEntry {
  readonly shard: number;
  readonly seq: number;
  /** Pending changes of this shard with a global id up to this one belong to the batch. */
  readonly lastGlobalId: number;
  readonly payload: Uint8Array;
}

interface GroupedWrite {
  readonly run: () => void;
  readonly resolve: () => void;
  readonly reject: (err: unknown) => void;
}

/**
 * The publisher's writes on the main thread's connection. `persist` and
 * `commit` queue themselves in the writer queue (urgent lane) and are grouped:
 * every one queued, by any shard, before the group's turn comes shares one
 * transaction, so with many shards the application sees one short write where
 * it saw one per shard step. The other calls run inside the caller's writer job.
 */
export class OutboxStore {
  readonly #db: Database;
  readonly #persist: Statement;
  readonly #clear: Statement;
  readonly #deleteGlobal: Statement;
  readonly #markByTable = new Map<string, Statement>();
  readonly #refuseByTable = new Map<string, Statement>();

  readonly #busyTimeoutMs: number;
  readonly #writer: WriterQueue;
  #group: GroupedWrite[] = [];

  constructor(db: Database, options: { busyTimeoutMs: number; writer: WriterQueue }) {
    this.#db = db;
    this.#busyTimeoutMs = options.busyTimeoutMs;
    this.#writer = options.writer;
    this.#persist = db.prepare(
      `INSERT INTO ${q(OUTBOX)} (shard, seq, last_global_id, payload) VALUES (?, ?, ?, ?) ` +
        `ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq, last_global_id = excluded.last_global_id, payload = excluded.payload`,
    );
    this.#clear = db.prepare(`UPDATE ${q(OUTBOX)} SET payload = NULL, last_global_id = NULL WHERE shard = ?`);
    this.#deleteGlobal = db.prepare(
      `DELETE FROM ${q(GLOBAL_LOG)} WHERE id IN (SELECT value FROM json_each(?))`,
    );
  }

  /** The highest global-log id ever assigned (0 before the first change). */
  globalSeq(): number {
    const v = this.#db.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck().get(GLOBAL_LOG) as
      number | undefined;
    return v ?? 0;
  }

  /** Last assigned batch sequence and the batch in flight (if any) per shard. */
  load(): { lastSeq: Map<number, number>; inFlight: OutboxEntry[] } {
    const rows = this.#db.prepare(`SELECT shard, seq, last_global_id, payload FROM ${q(OUTBOX)}`).all() as {
      shard: number;
      seq: number;
      last_global_id: number | null;
      payload: Buffer | null;
    }[];
    const lastSeq = new Map<number, number>();
    const inFlight: OutboxEntry[] = [];
    for (const r of rows) {
      lastSeq.set(r.shard, r.seq);
      if (r.payload !== null && r.last_global_id !== null) {
        inFlight.push({ shard: r.shard, seq: r.seq, lastGlobalId: r.last_global_id, payload: r.payload });
      }
    }
    return { lastSeq, inFlight };
  }

  /** Persists a batch before its first publish (grouped, see the class). */
  persist(entry: OutboxEntry): Promise<void> {
    return this.#grouped(() => this.#persistNow(entry));
  }

  /** Runs `write` in the next group transaction; rejects if that transaction fails (all of it rolls back). */
  #grouped(write: () => void): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#group.push({ run: write, resolve, reject });
      // Each waiter gets the outcome; the job's own rejection is for the writer queue's busy counter.
      if (this.#group.length === 1)
        this.#writer.run(() => this.#commitGroup(), 'urgent').catch(() => undefined);
    });
  }

  /** One IMMEDIATE transaction for the group; waits for the write lock without blocking (`whenWriteLockFree`). */
  async #commitGroup(): Promise<void> {
    const group = this.#group;
    this.#group = [];
    const txn = this.#db.transaction(() => {
      for (const w of group) w.run();
    });
    try {
      await whenWriteLockFree(this.#db, this.#busyTimeoutMs, () => txn.immediate());
    } catch (err) {
      for (const w of group) w.reject(err);
      throw err;
    }
    for (const w of group) w.resolve();
  }

  #persistNow(entry: OutboxEntry): void {
    this.#persist.run(entry.shard, entry.seq, entry.lastGlobalId, entry.payload);
  }

  #stmt(cache: Map<string, Statement>, table: string, state: number): Statement {
    let s = cache.get(table);
    if (s === undefined) {
      s = this.#db.prepare(
        `UPDATE ${q(changeLogTable(table))} SET state = ${state} WHERE id IN (SELECT value FROM json_each(?))`,
      );
      cache.set(table, s);
    }
    return s;
  }

  /** Rows become published (state 1) and leave the global log: one statement per table, not two per row. */
  #mark(changes: readonly PendingChange[]): void {
    const idsByTable = new Map<string, number[]>();
    const globalIds: number[] = [];
    for (const c of changes) {
      let ids = idsByTable.get(c.table);
      if (ids === undefined) idsByTable.set(c.table, (ids = []));
      ids.push(c.changeId);
      globalIds.push(c.globalId);
    }
    for (const [table, ids] of idsByTable) this.#stmt(this.#markByTable, table, 1).run(JSON.stringify(ids));
    this.#deleteGlobal.run(JSON.stringify(globalIds));
  }

  /**
   * One transaction for a shard's step: the acknowledged batch's rows become
   * published (invariant 1), and the shard's next batch (if any) replaces it in
   * the outbox before it is published (invariant 2). Grouped (see the class).
   */
  commit(shard: number, published: readonly PendingChange[], next: OutboxEntry | undefined): Promise<void> {
    return this.#grouped(() => {
      this.#mark(published);
      if (next === undefined) this.#clear.run(shard);
      else this.#persistNow(next);
    });
  }

  /**
   * A change too big for any message: kept in its change log with state 2 for
   * the operator (never dropped silently), removed from the publish order.
   */
  refuse(change: PendingChange): void {
    this.#db
      .transaction(() => {
        this.#stmt(this.#refuseByTable, change.table, 2).run(JSON.stringify([change.changeId]));
        this.#deleteGlobal.run(JSON.stringify([change.globalId]));
      })
      .immediate();
  }

  /** Global-log rows of tables no longer captured: nothing to publish. */
  dropOrphans(globalIds: readonly number[]): void {
    this.#deleteGlobal.run(JSON.stringify(globalIds));
  }
}
