import type { Database, Statement } from 'better-sqlite3';
import { changeLogTable, GLOBAL_LOG, OUTBOX, quoteIdent as q } from '../cdc/names.ts';
import type { PendingChange } from '../changelog/changelog-scanner.ts';

/** A batch persisted before it is published, so a retry after a crash is byte-identical (invariant 2). */
export interface OutboxEntry {
  readonly shard: number;
  readonly seq: number;
  /** Pending changes of this shard with a global id up to this one belong to the batch. */
  readonly lastGlobalId: number;
  readonly payload: Uint8Array;
}

/** The publisher's writes on the main thread's connection; every call runs inside the writer queue. */
export class OutboxStore {
  readonly #db: Database;
  readonly #persist: Statement;
  readonly #clear: Statement;
  readonly #deleteGlobal: Statement;
  readonly #markByTable = new Map<string, Statement>();
  readonly #refuseByTable = new Map<string, Statement>();

  constructor(db: Database) {
    this.#db = db;
    this.#persist = db.prepare(
      `INSERT INTO ${q(OUTBOX)} (shard, seq, last_global_id, payload) VALUES (?, ?, ?, ?) ` +
        `ON CONFLICT (shard) DO UPDATE SET seq = excluded.seq, last_global_id = excluded.last_global_id, payload = excluded.payload`,
    );
    this.#clear = db.prepare(`UPDATE ${q(OUTBOX)} SET payload = NULL, last_global_id = NULL WHERE shard = ?`);
    this.#deleteGlobal = db.prepare(`DELETE FROM ${q(GLOBAL_LOG)} WHERE id = ?`);
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

  persist(entry: OutboxEntry): void {
    this.#persist.run(entry.shard, entry.seq, entry.lastGlobalId, entry.payload);
  }

  #stmt(cache: Map<string, Statement>, table: string, state: number): Statement {
    let s = cache.get(table);
    if (s === undefined) {
      s = this.#db.prepare(`UPDATE ${q(changeLogTable(table))} SET state = ${state} WHERE id = ?`);
      cache.set(table, s);
    }
    return s;
  }

  /** After the PubAck: rows become published (state 1) and leave the global log, in one transaction (invariant 1). */
  markPublished(shard: number, changes: readonly PendingChange[]): void {
    this.#db
      .transaction(() => {
        for (const c of changes) {
          this.#stmt(this.#markByTable, c.table, 1).run(c.changeId);
          this.#deleteGlobal.run(c.globalId);
        }
        this.#clear.run(shard);
      })
      .immediate();
  }

  /**
   * A change too big for any message: kept in its change log with state 2 for
   * the operator (never dropped silently), removed from the publish order.
   */
  refuse(change: PendingChange): void {
    this.#db
      .transaction(() => {
        this.#stmt(this.#refuseByTable, change.table, 2).run(change.changeId);
        this.#deleteGlobal.run(change.globalId);
      })
      .immediate();
  }

  /** Global-log rows of tables no longer captured: nothing to publish. */
  dropOrphans(globalIds: readonly number[]): void {
    this.#db.transaction(() => {
      for (const id of globalIds) this.#deleteGlobal.run(id);
    })();
  }
}
