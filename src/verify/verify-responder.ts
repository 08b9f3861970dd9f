/**
 * A running node's side of verify and repair: answers digest requests over
 * NATS request/reply (verify-protocol.ts) from its own read-only connection,
 * and re-publishes or reconciles keys when a repair asks. The tree's leaves
 * are computed once per verify session and table, kept for a minute.
 */
import type Database from 'better-sqlite3';
import type { Msg, NatsConnection, Subscription } from '@nats-io/transport-node';
import { changeLogTable, quoteIdent as q, ROW_VERSIONS, valueColumn } from '../cdc/names.ts';
import type { TableSchema } from '../cdc/table-schema.ts';
import { capturedColumns } from '../cdc/trigger-sql.ts';
import { encodeRecord } from '../codec/change-batch-codec.ts';
import { rowOf } from '../codec/row-codec.ts';
import { hashLayout, type RowDigest } from '../codec/row-digest.ts';
import { exactText, type CapturedValue, type SqlValue } from '../codec/sql-value.ts';
import type { Logger } from '../logger.ts';
import {
  addTo,
  childDigests,
  emptyLeaves,
  rootDigest,
  type Digest,
  type DigestHasher,
} from './digest-tree.ts';
import { scanReplicatedState } from './replicated-state-scan.ts';
import type { WriteWaiter } from './write-waiter.ts';
import {
  nodeVerifySubject,
  verifySubject,
  type EntriesAnswer,
  type HelloAnswer,
  type ReconcileAnswer,
  type RepublishAnswer,
  type TreeAnswer,
  type VerifyRequest,
  type WireEntry,
} from './verify-protocol.ts';

/** What the responder needs of its node. */
export interface VerifyHost {
  readonly nodeId: number;
  readonly streamPrefix: string;
  /** Tables under capture, as last installed. */
  schemas(): readonly TableSchema[];
  /** Applied stream position per shard. */
  positions(): Record<string, number>;
  pending(): number;
  /** Publishes encoded change records in this node's next batches; undefined on a node that does not publish. */
  readonly enqueueRecords:
    ((table: string, items: readonly { key: readonly SqlValue[]; record: Uint8Array }[]) => void) | undefined;
  /** Logs a table's rows that differ from the index as changes; resolves with how many. */
  reconcile(table: string): Promise<number>;
  /** Waits for this node's changes up to `after` on other nodes (write-waiter.ts). */
  readonly waiter: WriteWaiter;
}

const SESSION_MS = 60_000;

export class VerifyResponder {
  readonly #nc: NatsConnection;
  readonly #db: Database.Database;
  readonly #digest: RowDigest;
  readonly #hasher: DigestHasher;
  readonly #host: VerifyHost;
  readonly #logger: Logger;
  readonly #subs: Subscription[] = [];
  readonly #sessions = new Map<
    string,
    { at: number; leaves: Map<string, Promise<Digest[]>>; entries: Map<string, Promise<WireEntry[]>> }
  >();

  constructor(deps: {
    nc: NatsConnection;
    db: Database.Database;
    digest: RowDigest;
    hasher: DigestHasher;
    host: VerifyHost;
    logger: Logger;
  }) {
    this.#nc = deps.nc;
    this.#db = deps.db;
    this.#digest = deps.digest;
    this.#hasher = deps.hasher;
    this.#host = deps.host;
    this.#logger = deps.logger;
  }

  open(): void {
    const { streamPrefix, nodeId } = this.#host;
    for (const subject of [verifySubject(streamPrefix), nodeVerifySubject(streamPrefix, nodeId)]) {
      this.#subs.push(
        this.#nc.subscribe(subject, {
          callback: (err, msg) => {
            if (err !== null) {
              this.#logger.warn(
                { subject, err: err.message },
                'cannot answer verify requests (the NATS user needs subscribe on this subject)',
              );
              return;
            }
            void this.#answer(msg);
          },
        }),
      );
    }
  }

  close(): void {
    for (const s of this.#subs) s.unsubscribe();
    this.#subs.length = 0;
    this.#sessions.clear();
  }

  async #answer(msg: Msg): Promise<void> {
    let reply: unknown;
    try {
      reply = await this.#handle(JSON.parse(new TextDecoder().decode(msg.data)) as VerifyRequest);
    } catch (err) {
      this.#logger.warn({ err: String((err as Error).message ?? err) }, 'verify request failed');
      reply = { error: String((err as Error).message ?? err) };
    }
    if (msg.reply !== undefined && msg.reply !== '') msg.respond(JSON.stringify(reply));
  }

  async #handle(r: VerifyRequest): Promise<unknown> {
    switch (r.op) {
      case 'hello':
        return {
          nodeId: this.#host.nodeId,
          tables: this.#host.schemas().map((s) => s.name),
          positions: this.#host.positions(),
          pending: this.#host.pending(),
          now: Date.now(),
        } satisfies HelloAnswer;
      case 'positions':
        return { positions: this.#host.positions() };
      case 'tree': {
        const leaves = await this.#leaves(r.session, r.table);
        const digests =
          r.prefixes === null
            ? [rootDigest(leaves)]
            : r.prefixes.flatMap((p) => childDigests(leaves, r.level, p));
        return { digests: digests.map((d) => [d.sum.toString(), d.count]) } satisfies TreeAnswer;
      }
      case 'entries': {
        const s = this.#session(r.session);
        const id = `${r.table}\u0000${r.buckets.join(',')}`;
        let all = s.entries.get(id);
        if (all === undefined) s.entries.set(id, (all = this.#entries(r.table, new Set(r.buckets))));
        const entries = await all;
        return {
          entries: entries.slice(r.offset, r.offset + r.limit),
          total: entries.length,
        } satisfies EntriesAnswer;
      }
      case 'republish':
        return this.#republish(r.table, r.keys, r.expect);
      case 'reconcile': {
        const escaped = await this.#host.reconcile(r.table);
        this.#logger.info({ table: r.table, escaped }, 'verify repair: logged rows that escaped capture');
        return { escaped } satisfies ReconcileAnswer;
      }
      case 'wait': {
        const w = this.#host.waiter;
        return w.wait(r.after === 'last' ? w.lastChangeId() : r.after, r.nodes, r.timeoutMs);
      }
      default:
        throw new Error(`unknown verify request ${JSON.stringify((r as { op?: unknown }).op)}`);
    }
  }

  #schema(table: string): TableSchema | undefined {
    return this.#host.schemas().find((s) => s.name === table);
  }

  #session(session: string) {
    const now = Date.now();
    for (const [id, s] of this.#sessions) if (now - s.at > SESSION_MS) this.#sessions.delete(id);
    let s = this.#sessions.get(session);
    if (s === undefined)
      this.#sessions.set(session, (s = { at: now, leaves: new Map(), entries: new Map() }));
    return s;
  }

  /** The leaf digests of a table for a session: scanned once, shared by the session's requests. */
  #leaves(session: string, table: string): Promise<Digest[]> {
    const s = this.#session(session);
    let leaves = s.leaves.get(table);
    if (leaves === undefined) {
      leaves = this.#scanLeaves(table);
      s.leaves.set(table, leaves);
    }
    return leaves;
  }

  async #scanLeaves(table: string): Promise<Digest[]> {
    const leaves = emptyLeaves();
    const schema = this.#schema(table);
    if (schema === undefined) return leaves; // not captured here: no rows, every key differs
    for await (const e of scanReplicatedState(this.#db, schema, this.#digest))
      addTo(leaves[this.#hasher.bucket(e.pk)]!, this.#hasher.entryHash(e));
    return leaves;
  }

  async #entries(table: string, buckets: ReadonlySet<number>): Promise<WireEntry[]> {
    const schema = this.#schema(table);
    if (schema === undefined) return [];
    const out: WireEntry[] = [];
    const logged = loggedValue(this.#db, schema, this.#digest);
    for await (const e of scanReplicatedState(this.#db, schema, this.#digest)) {
      if (!buckets.has(this.#hasher.bucket(e.pk))) continue;
      const w: WireEntry = {
        pk: e.pk.toString('base64'),
        v: e.version,
        o: e.origin,
        h: e.value === null ? null : e.value.toString(),
        u: e.unversioned,
      };
      if (e.unversioned) w.l = logged(e.pk) === e.value;
      out.push(w);
    }
    return out;
  }

  /** Re-publishes keys as the index holds them, when it still holds what verify saw (`expect`). */
  #republish(table: string, keys: readonly string[], expect: readonly WireEntry[]): RepublishAnswer {
    const answer: RepublishAnswer = { published: [], skipped: [] };
    const schema = this.#schema(table);
    const enqueue = this.#host.enqueueRecords;
    if (schema === undefined || enqueue === undefined) {
      const reason = schema === undefined ? 'table not captured here' : 'this node does not publish';
      answer.skipped = keys.map((pk) => ({ pk, reason }));
      return answer;
    }
    const columns = capturedColumns(schema);
    const layout = hashLayout(columns);
    const keyIndexes = schema.keyColumns.map((k) => columns.indexOf(k));
    const keyIs = schema.keyColumns.map((k) => `${q(k)} IS ?`).join(' AND ');
    const read = this.#db
      .prepare(`SELECT ${columns.map(q).join(', ')} FROM ${q(schema.name)} WHERE ${keyIs}`)
      .raw(true)
      .safeIntegers(true);
    const get = this.#db
      .prepare(`SELECT version, origin, hash, state FROM ${q(ROW_VERSIONS)} WHERE tbl = ? AND pk = ?`)
      .raw(true)
      .safeIntegers(true);
    const textBytes = (column: string) =>
      this.#db.prepare(`SELECT CAST(${q(column)} AS BLOB) FROM ${q(schema.name)} WHERE ${keyIs}`).pluck();
    const items: { key: SqlValue[]; record: Uint8Array }[] = [];
    keys.forEach((b64, i) => {
      const pk = Buffer.from(b64, 'base64');
      const idx = get.get(table, pk) as [bigint, bigint, bigint | null, bigint] | undefined;
      const want = expect[i];
      // At version 0 origins are not compared (replicated-state-scan.ts).
      if (
        idx === undefined ||
        want === undefined ||
        Number(idx[0]) !== want.v ||
        (want.v !== 0 && Number(idx[1]) !== want.o)
      ) {
        answer.skipped.push({ pk: b64, reason: 'changed since verify read it' });
        return;
      }
      const [version, origin, state] = [Number(idx[0]), Number(idx[1]), Number(idx[3])];
      const key = this.#digest.decodeKey(pk);
      let type: 'insert' | 'delete';
      let values: CapturedValue[];
      // The routing key: as the scanner reads it (lossy TEXT); versions make the shard it lands on irrelevant.
      let routing: SqlValue[];
      if (state === 0) {
        const row = read.get(key) as SqlValue[] | undefined;
        if (row === undefined || this.#digest.hash(layout, row) !== idx[2]) {
          answer.skipped.push({ pk: b64, reason: 'the row here is not what the index says' });
          return;
        }
        type = 'insert';
        routing = keyIndexes.map((k) => row[k]!);
        // better-sqlite3 reads TEXT lossily: a value that is not valid UTF-8 travels as its bytes.
        values = row.map((v, c) =>
          typeof v === 'string' ? exactText(v, () => textBytes(columns[c]!).get(key) as Uint8Array) : v,
        );
      } else if (state === 1) {
        type = 'delete';
        routing = key;
        // A delete carries the key; the other columns travel as NULL (as the reconciler logs one).
        values = columns.map((c) => {
          const k = schema.keyColumns.indexOf(c);
          return k < 0 ? null : key[k]!;
        });
      } else {
        answer.skipped.push({ pk: b64, reason: 'displaced by a UNIQUE value here' });
        return;
      }
      const record = encodeRecord({
        FromNodeId: origin,
        Payload: {
          Id: 0,
          Type: type,
          TableName: table,
          Row: rowOf(columns, values),
          CreatedAt: Date.now(),
          Version: version,
        },
      });
      items.push({ key: routing, record });
      answer.published.push({ pk: b64, version, origin, type });
    });
    if (items.length > 0) {
      enqueue(table, items);
      this.#logger.info(
        { table, keys: items.length },
        'verify repair: re-publishing keys with their original versions',
      );
    }
    return answer;
  }
}

/**
 * The hash of the values the newest change-log row of a key leaves (null for a
 * delete, undefined when none is logged): a local write on its way, not an escaped one.
 */
function loggedValue(
  db: Database.Database,
  schema: TableSchema,
  digest: RowDigest,
): (pk: Buffer) => bigint | null | undefined {
  const columns = capturedColumns(schema);
  const layout = hashLayout(columns);
  const keyIs = schema.keyColumns
    .map((k, i) => `${q(valueColumn(k))} IS ?${schema.keyFold?.[i] === 'nocase' ? ' COLLATE NOCASE' : ''}`)
    .join(' AND ');
  let stmt: Database.Statement | undefined;
  try {
    stmt = db
      .prepare(
        `SELECT type, ${columns.map((c) => q(valueColumn(c))).join(', ')} FROM ${q(changeLogTable(schema.name))} ` +
          `WHERE ${keyIs} ORDER BY id DESC LIMIT 1`,
      )
      .raw(true)
      .safeIntegers(true);
  } catch {
    stmt = undefined; // no change log (a read replica)
  }
  return (pk) => {
    const r = stmt?.get(digest.decodeKey(pk)) as [string, ...SqlValue[]] | undefined;
    if (r === undefined) return undefined;
    return r[0] === 'delete' ? null : digest.hash(layout, r.slice(1) as SqlValue[]);
  };
}
