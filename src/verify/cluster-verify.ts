/**
 * The operator's side of verify: finds the running nodes, compares their hash
 * trees table by table (descending only into subtrees whose digests differ),
 * and classifies each differing key as diverged or in flight.
 *
 * In flight: a node's row is a local write whose change is logged and on its
 * way, or a node lacks a version that it may not have received yet. A
 * difference counts as divergence only when it is seen in two rounds and
 * every node lacking the newest version has since applied every stream up to
 * where the streams ended after the earlier round (which held that version),
 * or when a node's row escaped capture (not in the index, not logged).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { randomUUID } from 'node:crypto';
import { createInbox, type NatsConnection } from '@nats-io/transport-node';
import type { JetStreamManager } from '@nats-io/jetstream';
import { streamName, shardNumbers } from '../nats/naming.ts';
import { newer } from '../replication/hybrid-clock.ts';
import { DEPTH, FANOUT } from './digest-tree.ts';
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

export interface ClusterVerifyOptions {
  readonly streamPrefix: string;
  readonly shards: number;
  /** Tables to compare; all captured tables when undefined. */
  readonly tables?: (table: string) => boolean;
  /** Rounds at most while differences are in flight (default 5). */
  readonly attempts?: number;
  /** Pause between rounds, ms (default 1000). */
  readonly settleMs?: number;
  /** How long discovery waits for nodes to answer, ms (default 1500). */
  readonly discoverMs?: number;
  /** Per request, ms (default 120 s: a node reads and hashes a whole table before its first answer). */
  readonly requestTimeoutMs?: number;
}

export type KeyStatus = 'diverged' | 'in-flight';

export interface KeyDifference {
  readonly table: string;
  /** Canonical key bytes, base64. */
  readonly pk: string;
  /** Per node: its entry, or undefined when it has nothing for the key. */
  readonly entries: ReadonlyMap<number, WireEntry | undefined>;
  readonly status: KeyStatus;
}

export interface TableVerdict {
  readonly table: string;
  /** Keys compared (the largest count any node holds). */
  readonly rows: number;
  /** Nodes that hold, for every diverged key, what most nodes hold. */
  readonly agreeing: readonly number[];
  readonly differences: readonly KeyDifference[];
}

export interface VerifyReport {
  readonly nodes: readonly number[];
  readonly tables: readonly TableVerdict[];
  readonly rows: number;
  readonly diverged: number;
  readonly inFlight: number;
  readonly rounds: number;
  /** Request and answer payload bytes exchanged. */
  readonly bytes: number;
  readonly ms: number;
}

interface Round {
  hellos: Map<number, HelloAnswer>;
  tables: Map<string, { rows: number; keys: Map<string, Map<number, WireEntry | undefined>> }>;
}

/** Keys per entries answer: ~100 bytes each keeps answers well under NATS's 1 MB. */
const ENTRIES_PER_PAGE = 4000;

export class ClusterVerify {
  readonly #nc: NatsConnection;
  readonly #jsm: JetStreamManager | undefined;
  readonly #o: ClusterVerifyOptions;
  #bytes = 0;

  constructor(nc: NatsConnection, jsm: JetStreamManager | undefined, options: ClusterVerifyOptions) {
    this.#nc = nc;
    this.#jsm = jsm;
    this.#o = options;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The nodes that answer on the verify subject. */
  async discover(): Promise<HelloAnswer[]> {
    const inbox = createInbox();
    const sub = this.#nc.subscribe(inbox);
    const data = JSON.stringify({ op: 'hello' } satisfies VerifyRequest);
    this.#bytes += data.length;
    this.#nc.publish(verifySubject(this.#o.streamPrefix), data, { reply: inbox });
    const out: HelloAnswer[] = [];
    const timer = setTimeout(() => sub.unsubscribe(), this.#o.discoverMs ?? 1500);
    for await (const m of sub) {
      this.#bytes += m.data.length;
      const a = JSON.parse(m.string()) as HelloAnswer;
      if (!out.some((h) => h.nodeId === a.nodeId)) out.push(a);
    }
    clearTimeout(timer);
    return out.sort((a, b) => a.nodeId - b.nodeId);
  }

  async #ask<T>(node: number, request: VerifyRequest): Promise<T> {
    const data = JSON.stringify(request);
    this.#bytes += data.length;
    const m = await this.#nc.request(nodeVerifySubject(this.#o.streamPrefix, node), data, {
      timeout: this.#o.requestTimeoutMs ?? 120_000,
    });
    this.#bytes += m.data.length;
    const a = JSON.parse(m.string()) as T | { error: string };
    if (typeof a === 'object' && a !== null && 'error' in a) throw new Error(`node ${node}: ${a.error}`);
    return a as T;
  }

  /** Compares every node's replicated state, in rounds until what differs is only divergence or the attempts run out. */
  async verify(nodes: readonly number[]): Promise<VerifyReport> {
    const t0 = performance.now();
    const bytes0 = this.#bytes;
    const attempts = Math.max(1, this.#o.attempts ?? 5);
    let previous: Round | undefined;
    let tails: Map<number, number> | undefined;
    let verdicts: TableVerdict[] = [];
    let rounds = 0;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      rounds = attempt;
      const round = await this.#round(nodes);
      verdicts = [...round.tables].map(([table, t]) => {
        const differences = [...t.keys].map(([pk, entries]) => ({
          table,
          pk,
          entries,
          status: classify(entries, previous?.tables.get(table)?.keys.get(pk), tails, round.hellos),
        }));
        const odd = new Set(
          differences.filter((d) => d.status === 'diverged').flatMap((d) => minority(d.entries)),
        );
        return { table, rows: t.rows, agreeing: nodes.filter((n) => !odd.has(n)), differences };
      });
      const inFlight = verdicts.some((v) => v.differences.some((d) => d.status === 'in-flight'));
      if (!inFlight || attempt === attempts) break;
      previous = round;
      tails = await this.#streamTails();
      await sleep(this.#o.settleMs ?? 1000);
    }
    const all = verdicts.flatMap((v) => v.differences);
    return {
      nodes,
      tables: verdicts,
      rows: verdicts.reduce((n, v) => n + v.rows, 0),
      diverged: all.filter((d) => d.status === 'diverged').length,
      inFlight: all.filter((d) => d.status === 'in-flight').length,
      rounds,
      bytes: this.#bytes - bytes0,
      ms: performance.now() - t0,
    };
  }

  async #round(nodes: readonly number[]): Promise<Round> {
    const session = randomUUID();
    const hellos = new Map<number, HelloAnswer>();
    await Promise.all(
      nodes.map(async (n) => hellos.set(n, await this.#ask<HelloAnswer>(n, { op: 'hello' }))),
    );
    const names = new Set<string>();
    for (const h of hellos.values()) for (const t of h.tables) if (this.#o.tables?.(t) ?? true) names.add(t);
    const tables: Round['tables'] = new Map();
    for (const table of [...names].sort()) tables.set(table, await this.#compareTable(session, table, nodes));
    return { hellos, tables };
  }

  async #tree(
    session: string,
    table: string,
    nodes: readonly number[],
    level: number,
    prefixes: number[] | null,
  ) {
    return Promise.all(
      nodes.map(async (n) =>
        (await this.#ask<TreeAnswer>(n, { op: 'tree', session, table, level, prefixes })).digests.map(
          ([sum, count]) => `${sum}/${count}`,
        ),
      ),
    );
  }

  async #compareTable(session: string, table: string, nodes: readonly number[]) {
    const roots = (await this.#tree(session, table, nodes, -1, null)).map((d) => d[0]!);
    const rows = Math.max(...roots.map((r) => Number(r.split('/')[1])));
    const keys = new Map<string, Map<number, WireEntry | undefined>>();
    if (roots.every((r) => r === roots[0])) return { rows, keys };
    let frontier = [0];
    for (let level = 0; level < DEPTH && frontier.length > 0; level++) {
      const answers = await this.#tree(session, table, nodes, level, frontier);
      const next: number[] = [];
      for (let i = 0; i < frontier.length * FANOUT; i++)
        if (answers.some((a) => a[i] !== answers[0]![i]))
          next.push(frontier[Math.floor(i / FANOUT)]! * FANOUT + (i % FANOUT));
      frontier = next;
    }
    if (frontier.length === 0) return { rows, keys };
    const byNode = await Promise.all(nodes.map((n) => this.#entries(n, session, table, frontier)));
    const pks = new Set(byNode.flatMap((m) => [...m.keys()]));
    for (const pk of pks) {
      const entries = new Map(nodes.map((n, j) => [n, byNode[j]!.get(pk)]));
      const seen = [...entries.values()].map((e) => (e === undefined ? '' : `${e.v}/${e.o}/${e.h}/${e.u}`));
      if (seen.some((x) => x !== seen[0])) keys.set(pk, entries);
    }
    return { rows, keys };
  }

  /** A node's keys in the given leaf buckets, fetched in pages that fit a NATS message. */
  async #entries(node: number, session: string, table: string, buckets: number[]) {
    const out = new Map<string, WireEntry>();
    for (let offset = 0; ; offset += ENTRIES_PER_PAGE) {
      const a = await this.#ask<EntriesAnswer>(node, {
        op: 'entries',
        session,
        table,
        buckets,
        offset,
        limit: ENTRIES_PER_PAGE,
      });
      for (const e of a.entries) out.set(e.pk, e);
      if (offset + ENTRIES_PER_PAGE >= a.total) return out;
    }
  }

  /** The last sequence of every shard stream now. */
  async #streamTails(): Promise<Map<number, number> | undefined> {
    if (this.#jsm === undefined) return undefined;
    const tails = new Map<number, number>();
    for (const shard of shardNumbers(this.#o.shards)) {
      const info = await this.#jsm.streams.info(streamName(this.#o.streamPrefix, shard));
      tails.set(shard, info.state.last_seq);
    }
    return tails;
  }

  async republish(
    node: number,
    table: string,
    keys: string[],
    expect: WireEntry[],
  ): Promise<RepublishAnswer> {
    return this.#ask<RepublishAnswer>(node, { op: 'republish', table, keys, expect });
  }

  async reconcile(node: number, table: string): Promise<ReconcileAnswer> {
    return this.#ask<ReconcileAnswer>(node, { op: 'reconcile', table });
  }
}

/** The newest (version, origin) among the entries, by last writer wins. */
export function newest(
  entries: ReadonlyMap<number, WireEntry | undefined>,
): { v: number; o: number } | undefined {
  let best: { v: number; o: number } | undefined;
  for (const e of entries.values()) {
    if (e === undefined || e.v < 0) continue;
    if (best === undefined || newer(e.v, e.o, best.v, best.o)) best = { v: e.v, o: e.o };
  }
  return best;
}

/** Nodes whose entry differs from the one most nodes hold (ties: the entry of the lowest node id). */
function minority(entries: ReadonlyMap<number, WireEntry | undefined>): number[] {
  const id = (e: WireEntry | undefined) => (e === undefined ? '' : `${e.v}/${e.o}/${e.h}/${e.u}`);
  const counts = new Map<string, number>();
  for (const e of entries.values()) counts.set(id(e), (counts.get(id(e)) ?? 0) + 1);
  const top = Math.max(...counts.values());
  const majority = [...entries].find(([, e]) => counts.get(id(e)) === top)!;
  return [...entries].filter(([, e]) => id(e) !== id(majority[1])).map(([n]) => n);
}

function caughtUp(hello: HelloAnswer | undefined, tails: ReadonlyMap<number, number> | undefined): boolean {
  if (hello === undefined || tails === undefined) return false;
  for (const [shard, last] of tails) if ((hello.positions[String(shard)] ?? 0) < last) return false;
  return true;
}

function classify(
  entries: ReadonlyMap<number, WireEntry | undefined>,
  before: ReadonlyMap<number, WireEntry | undefined> | undefined,
  tails: ReadonlyMap<number, number> | undefined,
  hellos: ReadonlyMap<number, HelloAnswer>,
): KeyStatus {
  if (before === undefined) return 'in-flight'; // one sighting proves nothing while writes go on
  const top = newest(entries);
  const heldBefore =
    top !== undefined && [...before.values()].some((e) => e !== undefined && e.v === top.v && e.o === top.o);
  for (const [node, e] of entries) {
    const upToDate = caughtUp(hellos.get(node), tails);
    if (e?.u === true) {
      // A local write whose change is logged is on its way; one neither indexed nor logged escaped capture.
      if (e.l === true || !upToDate) continue;
      return 'diverged';
    }
    const lacks = top !== undefined && (e === undefined || e.v !== top.v || e.o !== top.o);
    if (lacks && heldBefore && upToDate) return 'diverged';
  }
  return 'in-flight';
}
