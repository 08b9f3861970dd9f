import type { Database, Statement } from 'better-sqlite3';
import { changeLogTable, GLOBAL_LOG, OUTBOX, quoteIdent as q } from '../cdc/names.ts';
import type { PendingChange } from '../changelog/changelog-scanner.ts';
import { whenWriteLockFree } from '../sqlite/write-lock-poll.ts';
import type { WriterQueue } from '../sqlite/writer-queue.ts';

/** Which change-log row a change is, and its place in the global log. */
export type ChangeRef = Pick<PendingChange, 'globalId' | 'table' | 'changeId'>;

/** A batch persisted before it is published, so a retry after a crash is byte-identical (invariant 2). */
export interface OutboxEntry {
  readonly shard: number;
  readonly seq: number;
  /** Pending changes of this shard with a global id up to this one belong to the batch. */
  readonly lastGlobalId: number;
  readonly payload: Uint8Array;
}

/** Statements on a table by id: a range, and a JSON list. */
interface IdStatements {
  readonly range: Statement;
  readonly list: Statement;
}
/** Runs at least this long are marked by range; shorter ones join the list. */
const MIN_RANGE = 8;

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
  readonly #markById = new Map<string, IdStatements>();
  readonly #deleteById = new Map<string, IdStatements>();
  readonly #refuseById = new Map<string, IdStatements>();

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

  /**
   * Rows become published (state 1) and leave the global log. Runs of
   * consecutive ids (every batch of a single-shard node) go by id range, the
   * rest by one json_each list per table: ~1.5 against ~2.4 µs per row, measured.
   */
  #mark(changes: readonly ChangeRef[]): void {
    const idsByTable = new Map<string, number[]>();
    const globalIds: number[] = [];
    for (const c of changes) {
      let ids = idsByTable.get(c.table);
      if (ids === undefined) idsByTable.set(c.table, (ids = []));
      ids.push(c.changeId);
      globalIds.push(c.globalId);
    }
    for (const [table, ids] of idsByTable)
      this.#byIds(this.#markById, changeLogTable(table), 'UPDATE', 'SET state = 1', ids);
    this.#byIds(this.#deleteById, GLOBAL_LOG, 'DELETE FROM', '', globalIds);
  }

  /** `<verb> <table> <set> WHERE id ...` for `ids`: runs of consecutive ids by range, the rest in one list. */
  #byIds(
    cache: Map<string, IdStatements>,
    table: string,
    verb: string,
    set: string,
    ids: readonly number[],
  ): void {
    let s = cache.get(table);
    if (s === undefined) {
      const head = `${verb} ${q(table)} ${set} WHERE id`;
      s = {
        range: this.#db.prepare(`${head} BETWEEN ? AND ?`),
        list: this.#db.prepare(`${head} IN (SELECT value FROM json_each(?))`),
      };
      cache.set(table, s);
    }
    const singles: number[] = [];
    for (let i = 0; i < ids.length;) {
      let j = i;
      while (j + 1 < ids.length && ids[j + 1] === ids[j]! + 1) j++;
      if (j - i + 1 >= MIN_RANGE) s.range.run(ids[i], ids[j]);
      else for (let k = i; k <= j; k++) singles.push(ids[k]!);
      i = j + 1;
    }
    if (singles.length > 0) s.list.run(JSON.stringify(singles));
  }

  /**
   * One transaction for a shard's step: the acknowledged batch's rows become
   * published (invariant 1), and the shard's next batch (if any) replaces it in
   * the outbox before it is published (invariant 2). Grouped (see the class).
   */
  commit(shard: number, published: readonly ChangeRef[], next: OutboxEntry | undefined): Promise<void> {
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
  refuse(change: ChangeRef): void {
    this.#db
      .transaction(() => {
        this.#byIds(this.#refuseById, changeLogTable(change.table), 'UPDATE', 'SET state = 2', [
          change.changeId,
        ]);
        this.#byIds(this.#deleteById, GLOBAL_LOG, 'DELETE FROM', '', [change.globalId]);
      })
      .immediate();
  }

  /** Global-log rows of tables no longer captured: nothing to publish. */
  dropOrphans(globalIds: readonly number[]): void {
    this.#byIds(this.#deleteById, GLOBAL_LOG, 'DELETE FROM', '', globalIds);
  }
}
