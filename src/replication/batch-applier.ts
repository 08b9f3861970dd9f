import type { Database, Statement } from 'better-sqlite3';
import {
  CAPTURED_TABLES,
  DEAD_LETTERS,
  isInternalName,
  isSqliteName,
  ORIGIN_SEQS,
  POSITIONS,
  quoteIdent as q,
  REPLAY_GUARD,
} from '../cdc/names.ts';
import { RetiredNames } from '../cdc/retired-names.ts';
import { TableFilter } from '../cdc/table-filter.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import { decodeBody } from '../codec/change-batch-codec.ts';
import type { WireValue } from '../codec/sql-value.ts';
import { MalformedMessageError, type ChangeRecord } from '../codec/change-record.ts';
import type { RowDigest } from '../codec/row-digest.ts';
import { ChangeResolver, type ResolveCounts } from './change-resolver.ts';
import { HybridClock } from './hybrid-clock.ts';
import { parseMsgId, type BatchId } from './msg-id.ts';
import { isRefusal, SchemaLagError, TableApplier } from './table-applier.ts';
import { errorMessage } from '../error-message.ts';

/** A message of a shard stream, as handed to the applier. */
export interface InboundMessage {
  readonly seq: number;
  readonly msgId: string | undefined;
  readonly data: Uint8Array;
}

export interface ApplyResult {
  /** The shard's stored position after this call (highest stream sequence applied or skipped). */
  readonly position: number;
  readonly appliedMessages: number;
  readonly appliedChanges: number;
  /** Messages at or below the stored position, or re-published batches already applied. */
  readonly duplicates: number;
  readonly deadLettered: readonly { readonly seq: number; readonly reason: string }[];
  /** What the changes came to, by version (see ChangeResolver). */
  readonly resolved: Readonly<ResolveCounts>;
  /** Set when a message waits for this node's schema: it and everything after it were not applied. */
  readonly blocked?: { readonly seq: number; readonly reason: string };
  /** CreatedAt (ms) of the newest change applied, 0 if none. */
  readonly lastChangeAt: number;
  /** Changes naming a table or column this node renamed (mapped) or dropped (skipped, or applied without the column). */
  readonly oldSchema: Readonly<OldSchemaCounts>;
  /** Why changes were refused or skipped, distinct, at most MAX_REASONS (for the log). */
  readonly reasons: readonly string[];
}

export interface OldSchemaCounts {
  /** Changes that named a renamed table or column, applied under the new name. */
  mapped: number;
  /** Changes to a dropped table: skipped. */
  skipped: number;
  /** Values of dropped columns left out of changes that applied otherwise. */
  droppedValues: number;
}

/** Reasons returned per apply call, at most (a batch refusing thousands of rows logs a few). */
const MAX_REASONS = 10;

export interface BatchApplierOptions {
  readonly includeTables: readonly string[];
  readonly excludeTables: readonly string[];
  readonly nodeId: number;
  /** The node's clock state (HybridClock.state, shared memory). */
  readonly clock: BigInt64Array;
  readonly digest: RowDigest;
  /** The application's writes here are captured and published (`publish = true`). */
  readonly localWrites: boolean;
  readonly maxClockSkewMs: number;
}

/**
 * Applies a shard's messages in one transaction with the replay guard set
 * (invariant 6), storing the shard's stream position and the origin batch
 * sequences in that same transaction (invariant 4). Each message applies
 * inside a savepoint: a message that can never apply is dead-lettered, one
 * that waits for the schema stops the batch there (invariant 5).
 */
export class BatchApplier {
  readonly #db: Database;
  readonly #filter: TableFilter;
  #tables = new Map<string, TableApplier | null>();
  readonly #stmts: {
    position: Statement;
    setPosition: Statement;
    originSeq: Statement;
    setOriginSeq: Statement;
    deadLetter: Statement;
    registry: Statement;
    tableExists: Statement;
    guardOn: Statement;
    guardOff: Statement;
  };
  readonly #resolver: ChangeResolver;
  readonly #retired: RetiredNames;
  readonly #oldSchema: OldSchemaCounts = { mapped: 0, skipped: 0, droppedValues: 0 };
  #reasons = new Set<string>();
  readonly #applyEach: (records: ChangeRecord[]) => { changes: number; lastChangeAt: number };
  readonly #applyOne: (rec: ChangeRecord) => boolean;
  readonly #applyRecords: (records: ChangeRecord[]) => { changes: number; lastChangeAt: number };
  readonly #applyBatch: (shard: number, messages: readonly InboundMessage[]) => ApplyResult;

  constructor(db: Database, options: BatchApplierOptions) {
    this.#db = db;
    this.#filter = new TableFilter(options.includeTables, options.excludeTables);
    this.#resolver = new ChangeResolver(db, {
      nodeId: options.nodeId,
      clock: new HybridClock(options.clock),
      digest: options.digest,
      localWrites: options.localWrites,
      maxClockSkewMs: options.maxClockSkewMs,
    });
    this.#stmts = {
      position: db.prepare(`SELECT stream_seq FROM ${q(POSITIONS)} WHERE shard = ?`).pluck(),
      setPosition: db.prepare(
        `INSERT INTO ${q(POSITIONS)} (shard, stream_seq, updated_at, last_change_at) VALUES (?, ?, ?, ?) ` +
          `ON CONFLICT (shard) DO UPDATE SET stream_seq = excluded.stream_seq, updated_at = excluded.updated_at, ` +
          `last_change_at = max(last_change_at, excluded.last_change_at)`,
      ),
      originSeq: db.prepare(`SELECT seq FROM ${q(ORIGIN_SEQS)} WHERE origin = ? AND shard = ?`).pluck(),
      setOriginSeq: db.prepare(
        `INSERT INTO ${q(ORIGIN_SEQS)} (origin, shard, seq) VALUES (?, ?, ?) ON CONFLICT (origin, shard) DO UPDATE SET seq = excluded.seq`,
      ),
      deadLetter: db.prepare(
        `INSERT INTO ${q(DEAD_LETTERS)} (shard, stream_seq, msg_id, reason, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
      ),
      registry: db.prepare(`SELECT schema FROM ${q(CAPTURED_TABLES)} WHERE name = ?`).pluck(),
      tableExists: db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").pluck(),
      guardOn: db.prepare(`INSERT OR IGNORE INTO ${q(REPLAY_GUARD)} (id) VALUES (1)`),
      guardOff: db.prepare(`DELETE FROM ${q(REPLAY_GUARD)}`),
    };
    this.#retired = new RetiredNames(db);
    // Nested db.transaction() runs as a SAVEPOINT inside the batch transaction.
    this.#applyRecords = db.transaction((records: ChangeRecord[]) => this.#applyRecordsNow(records));
    this.#applyEach = db.transaction((records: ChangeRecord[]) => this.#applyEachNow(records));
    this.#applyOne = db.transaction((rec: ChangeRecord) => this.#applyRecord(rec));
    const batch = db.transaction((shard: number, messages: readonly InboundMessage[]) =>
      this.#applyBatchNow(shard, messages),
    );
    this.#applyBatch = (shard, messages) => batch.immediate(shard, messages);
  }

  /** Forget prepared per-table statements: the schema changed. */
  invalidateSchema(): void {
    this.#tables = new Map();
  }

  /** The stored position of a shard (0 = nothing applied). */
  position(shard: number): number {
    return Number((this.#stmts.position.get(shard) as number | bigint | undefined) ?? 0);
  }

  apply(shard: number, messages: readonly InboundMessage[]): ApplyResult {
    return this.#applyBatch(shard, messages);
  }

  #table(name: string): TableApplier | null | 'excluded' {
    if (!this.#filter.accepts(name)) return 'excluded';
    let t = this.#tables.get(name);
    if (t !== undefined) return t;
    const json = this.#stmts.registry.get(name) as string | undefined;
    t = json === undefined ? null : new TableApplier(this.#db, JSON.parse(json) as TableSchema);
    this.#tables.set(name, t);
    return t;
  }

  #applyRecordsNow(records: ChangeRecord[]): { changes: number; lastChangeAt: number } {
    let changes = 0;
    let lastChangeAt = 0;
    for (const rec of records) {
      if (!this.#applyRecord(rec)) continue;
      changes++;
      if (rec.Payload.CreatedAt > lastChangeAt) lastChangeAt = rec.Payload.CreatedAt;
    }
    return { changes, lastChangeAt };
  }

  /**
   * A message one change at a time, each in its own savepoint: a change an application
   * trigger or constraint refuses goes to the conflict log with the reason, and the
   * message's other changes apply. Taken only after the whole message failed so.
   */
  #applyEachNow(records: ChangeRecord[]): { changes: number; lastChangeAt: number } {
    let changes = 0;
    let lastChangeAt = 0;
    for (const rec of records) {
      try {
        if (!this.#applyOne(rec)) continue;
      } catch (err) {
        if (!isRefusal(err)) throw err;
        const table = this.#table(this.#retired.table(rec.Payload.TableName) ?? rec.Payload.TableName);
        if (!(table instanceof TableApplier)) throw err;
        const { Type, Row, Version } = rec.Payload;
        const reason = `refused by ${table.schema.name}: ${errorMessage(err)}`;
        this.#resolver.refuse(
          table,
          Type,
          this.#mapColumns(table, Row),
          Version ?? 0,
          rec.FromNodeId,
          reason,
        );
        this.#reason(reason);
        continue;
      }
      changes++;
      if (rec.Payload.CreatedAt > lastChangeAt) lastChangeAt = rec.Payload.CreatedAt;
    }
    return { changes, lastChangeAt };
  }

  /** Applies one change; false when it was not for this node (excluded table, dropped table). */
  #applyRecord(rec: ChangeRecord): boolean {
    const { TableName, Type, Row, Version } = rec.Payload;
    if (isInternalName(TableName) || isSqliteName(TableName)) {
      throw new MalformedMessageError(
        `change targets ${JSON.stringify(TableName.slice(0, 80))}, which is not a user table`,
      );
    }
    let name = TableName;
    let table = this.#table(name);
    if (table === 'excluded') return false;
    if (table === null && this.#stmts.tableExists.get(name) === undefined) {
      // A name this node retired is final when changed by hand; a replicated migration still to
      // apply here that brings it back is schema that may come, and would hold instead.
      const to = this.#retired.table(name);
      if (to === null) {
        this.#oldSchema.skipped++;
        this.#reason(`table ${JSON.stringify(name.slice(0, 200))} was dropped on this node: change skipped`);
        return false;
      }
      if (to !== undefined) {
        name = to;
        table = this.#table(name);
        if (table === 'excluded') return false;
        this.#oldSchema.mapped++;
      }
    }
    if (table === null) {
      const exists = this.#stmts.tableExists.get(name) !== undefined;
      this.#tables.delete(name);
      throw new SchemaLagError(
        exists
          ? `table ${JSON.stringify(name)} is not under capture yet`
          : `no such table ${JSON.stringify(name.slice(0, 200))}`,
      );
    }
    const row = this.#mapColumns(table, Row);
    try {
      this.#resolver.apply(table, Type, row, Version ?? 0, rec.FromNodeId);
    } catch (err) {
      // Re-read this table's layout on the next attempt: the periodic re-check then sees a
      // registry brought up to date, even if the schema-change notice never reached this worker.
      if (err instanceof SchemaLagError) this.#tables.delete(name);
      throw err;
    }
    return true;
  }

  /**
   * The change's row under this node's column names: renamed columns take their new
   * name, dropped ones are left out (counted). Unknown columns stay: they may still be
   * created here, and the table applier holds the shard for them.
   */
  #mapColumns(table: TableApplier, row: Record<string, WireValue>): Record<string, WireValue> {
    let unknown = false;
    for (const c in row) {
      if (!table.hasColumn(c)) {
        unknown = true;
        break;
      }
    }
    if (!unknown) return row;
    const out: Record<string, WireValue> = {};
    let mapped = false;
    for (const [c, v] of Object.entries(row)) {
      if (table.hasColumn(c)) {
        if (!Object.hasOwn(out, c)) out[c] = v;
        continue;
      }
      const to = this.#retired.column(table.schema.name, c);
      if (to === null) {
        this.#oldSchema.droppedValues++;
        this.#reason(`column ${table.schema.name}.${c} was dropped on this node: its value is left out`);
      } else if (to !== undefined && table.hasColumn(to)) {
        out[to] = v; // the value under the new name wins over a stale one of that name
        mapped = true;
      } else {
        out[c] = v;
      }
    }
    if (mapped) this.#oldSchema.mapped++;
    return out;
  }

  #reason(reason: string): void {
    if (this.#reasons.size < MAX_REASONS) this.#reasons.add(reason);
  }

  #applyBatchNow(shard: number, messages: readonly InboundMessage[]): ApplyResult {
    const s = this.#stmts;
    let position = this.position(shard);
    const originSeqs = new Map<number, number>();
    const originSeq = (origin: number): number => {
      let v = originSeqs.get(origin);
      if (v === undefined) {
        v = Number((s.originSeq.get(origin, shard) as number | bigint | undefined) ?? 0);
        originSeqs.set(origin, v);
      }
      return v;
    };
    const touchedOrigins = new Set<number>();
    let appliedMessages = 0;
    let appliedChanges = 0;
    let duplicates = 0;
    let lastChangeAt = 0;
    this.#resolver.resetCounts();
    this.#oldSchema.mapped = 0;
    this.#oldSchema.skipped = 0;
    this.#oldSchema.droppedValues = 0;
    this.#reasons = new Set();
    const deadLettered: { seq: number; reason: string }[] = [];
    let blocked: { seq: number; reason: string } | undefined;
    const now = Date.now();

    s.guardOn.run();
    for (const m of messages) {
      if (m.seq <= position) {
        duplicates++;
        continue;
      }
      const id = batchId(m.msgId, shard);
      if (id !== undefined && id.seq <= originSeq(id.origin)) {
        duplicates++;
        position = m.seq;
        continue;
      }
      try {
        const records = decodeBody(m.data);
        let r: { changes: number; lastChangeAt: number };
        const counted = { ...this.#resolver.counts };
        const oldSchema = { ...this.#oldSchema };
        try {
          r = this.#applyRecords(records);
        } catch (err) {
          // Refused by an application trigger or constraint: not a schema lag, the other changes go on.
          if (!isRefusal(err)) throw err;
          Object.assign(this.#resolver.counts, counted); // the failed attempt was rolled back
          Object.assign(this.#oldSchema, oldSchema);
          r = this.#applyEach(records);
        }
        appliedMessages++;
        appliedChanges += r.changes;
        if (r.lastChangeAt > lastChangeAt) lastChangeAt = r.lastChangeAt;
        // Only a batch that applied marks its origin sequence as done: a dead-lettered
        // message's Msg-Id is unverified (it may be garbage claiming a high sequence, which
        // would make every later batch of that origin look like a duplicate).
        if (id !== undefined) {
          originSeqs.set(id.origin, id.seq);
          touchedOrigins.add(id.origin);
        }
      } catch (err) {
        if (err instanceof SchemaLagError) {
          blocked = { seq: m.seq, reason: err.message };
          break;
        }
        const reason = neverApplies(err);
        if (reason === undefined) throw err; // transient (disk full, I/O): the whole batch rolls back and is retried
        s.deadLetter.run(shard, m.seq, m.msgId ?? null, reason, m.data, now);
        deadLettered.push({ seq: m.seq, reason });
      }
      position = m.seq;
    }
    for (const origin of touchedOrigins) s.setOriginSeq.run(origin, shard, originSeqs.get(origin)!);
    s.setPosition.run(shard, position, now, lastChangeAt);
    s.guardOff.run();
    const result: ApplyResult = {
      position,
      appliedMessages,
      appliedChanges,
      duplicates,
      deadLettered,
      resolved: { ...this.#resolver.counts },
      lastChangeAt,
      oldSchema: { ...this.#oldSchema },
      reasons: [...this.#reasons],
    };
    return blocked === undefined ? result : { ...result, blocked };
  }

  /**
   * Operator action: moves the message holding a shard to the dead letters and
   * advances the position past it, in one transaction.
   */
  deadLetter(shard: number, message: InboundMessage, reason: string): void {
    this.#db
      .transaction(() => {
        const position = this.position(shard);
        if (message.seq <= position) return;
        this.#stmts.deadLetter.run(
          shard,
          message.seq,
          message.msgId ?? null,
          reason,
          message.data,
          Date.now(),
        );
        this.#stmts.setPosition.run(shard, message.seq, Date.now(), 0);
      })
      .immediate();
  }
}

/** The batch id of a message of this shard; ids naming another shard are not ours (hand-made or misrouted). */
function batchId(msgId: string | undefined, shard: number): BatchId | undefined {
  const id = parseMsgId(msgId);
  return id !== undefined && id.shard === shard ? id : undefined;
}

/** The dead-letter reason for an error that no retry can fix, or undefined for a transient one. */
function neverApplies(err: unknown): string | undefined {
  if (err instanceof MalformedMessageError) return err.message;
  const code = (err as { code?: string }).code ?? '';
  if (code.startsWith('SQLITE_CONSTRAINT') || code === 'SQLITE_TOOBIG' || code === 'SQLITE_RANGE') {
    return `cannot apply: ${errorMessage(err)}`;
  }
  if (err instanceof TypeError || err instanceof RangeError) return `cannot apply: ${err.message}`;
  return undefined;
}
