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
import { TableFilter } from '../cdc/table-filter.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import { decodeBody } from '../codec/change-batch-codec.ts';
import { MalformedMessageError, type ChangeRecord } from '../codec/change-record.ts';
import type { RowDigest } from '../codec/row-digest.ts';
import { ChangeResolver, type ResolveCounts } from './change-resolver.ts';
import { HybridClock } from './hybrid-clock.ts';
import { parseMsgId, type BatchId } from './msg-id.ts';
import { SchemaLagError, TableApplier } from './table-applier.ts';

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
}

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
    // Nested db.transaction() runs as a SAVEPOINT inside the batch transaction.
    this.#applyRecords = db.transaction((records: ChangeRecord[]) => this.#applyRecordsNow(records));
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
      const { TableName, Type, Row, CreatedAt, Version } = rec.Payload;
      if (isInternalName(TableName) || isSqliteName(TableName)) {
        throw new MalformedMessageError(
          `change targets ${JSON.stringify(TableName.slice(0, 80))}, which is not a user table`,
        );
      }
      const table = this.#table(TableName);
      if (table === 'excluded') continue;
      if (table === null) {
        const exists = this.#stmts.tableExists.get(TableName) !== undefined;
        this.#tables.delete(TableName);
        throw new SchemaLagError(
          exists
            ? `table ${JSON.stringify(TableName)} is not under capture yet`
            : `no such table ${JSON.stringify(TableName.slice(0, 200))}`,
        );
      }
      try {
        this.#resolver.apply(table, Type, Row, Version ?? 0, rec.FromNodeId);
      } catch (err) {
        // Re-read this table's layout on the next attempt: the periodic re-check then sees a
        // registry brought up to date, even if the schema-change notice never reached this worker.
        if (err instanceof SchemaLagError) this.#tables.delete(TableName);
        throw err;
      }
      changes++;
      if (CreatedAt > lastChangeAt) lastChangeAt = CreatedAt;
    }
    return { changes, lastChangeAt };
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
        const r = this.#applyRecords(records);
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
    return `cannot apply: ${(err as Error).message}`;
  }
  if (err instanceof TypeError || err instanceof RangeError) return `cannot apply: ${err.message}`;
  return undefined;
}
