/**
 * "Has my write reached the others?": waits until the changes a node captured
 * up to a global change id are applied on enough other nodes. The id is the
 * node's `__harmonylite___global_change_log` id (AUTOINCREMENT, so the last one
 * is in `sqlite_sequence`). Once no change up to it is left to publish, every
 * batch that carried one was acknowledged, so the stream positions this
 * node's publisher had acknowledged at that moment are a bound: a node whose
 * applied position reached them on every shard holds the write.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type Database from 'better-sqlite3';
import type { NatsConnection } from '@nats-io/transport-node';
import { GLOBAL_LOG, quoteIdent as q } from '../cdc/names.ts';
import { nodeVerifySubject, type HelloAnswer, type VerifyRequest } from './verify-protocol.ts';

/** `nodes=`: every node, a majority, or this many nodes (this one included). */
export type NodesWanted = 'all' | 'quorum' | number;

export function parseNodesWanted(s: string): NodesWanted | undefined {
  if (s === 'all' || s === 'quorum') return s;
  return /^[1-9]\d{0,5}$/.test(s) ? Number(s) : undefined;
}

/** `5s`, `500ms`, `1m`, or milliseconds. */
export function parseDurationMs(s: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(s.trim());
  if (m === null) return undefined;
  const n = Number(m[1]) * (m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 1);
  return Number.isFinite(n) ? Math.round(n) : undefined;
}

export interface WaitResult {
  readonly reached: boolean;
  readonly after: number;
  /** Nodes that must hold the write, this one included. */
  readonly needed: number;
  /** Stream positions per shard that a node must have applied. */
  readonly target: Record<string, number>;
  /** This node and every other node asked, with its last seen positions. */
  readonly nodes: readonly { node: number; holds: boolean; positions?: Record<string, number> }[];
  readonly ms: number;
}

export interface WriteWaiterDeps {
  readonly nodeId: number;
  /** A read-only connection to the node's database. */
  readonly db: Database.Database;
  readonly nc: NatsConnection;
  readonly streamPrefix: string;
  /** The stream sequence of the last batch the publisher had acknowledged, per shard. */
  readonly acked: () => ReadonlyMap<number, number>;
  /** The other nodes of the cluster. */
  readonly otherNodes: () => Promise<readonly number[]>;
}

const POLL_MS = 5;
/** How long the list of other nodes (read from the status bucket) is reused. */
const NODES_TTL_MS = 1000;

export class WriteWaiter {
  readonly #d: WriteWaiterDeps;
  readonly #lastId: Database.Statement;
  readonly #unpublished: Database.Statement;
  /**
   * One positions request in flight per node, shared by every wait: at 1k writes/s with a
   * wait per write, each wait polling on its own flooded the nodes with requests.
   */
  readonly #polls = new Map<number, Promise<Record<string, number> | undefined>>();
  #others: { readonly at: number; readonly nodes: Promise<readonly number[]> } | undefined;

  constructor(deps: WriteWaiterDeps) {
    this.#d = deps;
    this.#lastId = deps.db.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck();
    this.#unpublished = deps.db.prepare(`SELECT 1 FROM ${q(GLOBAL_LOG)} WHERE id <= ? LIMIT 1`).pluck();
  }

  /** The id of the last change captured on this node (0 when none). */
  lastChangeId(): number {
    return Number((this.#lastId.get(GLOBAL_LOG) as number | undefined) ?? 0);
  }

  async wait(after: number, wanted: NodesWanted, timeoutMs: number): Promise<WaitResult> {
    const t0 = performance.now();
    const deadline = t0 + timeoutMs;
    const result = (
      reached: boolean,
      needed: number,
      target: ReadonlyMap<number, number>,
      nodes: WaitResult['nodes'],
    ): WaitResult => ({
      reached,
      after,
      needed,
      target: Object.fromEntries([...target].map(([s, v]) => [String(s), v])),
      nodes,
      ms: performance.now() - t0,
    });
    // Published: captured here (the id exists) and no change up to it left in the publish order.
    while (this.lastChangeId() < after || this.#unpublished.get(after) !== undefined) {
      if (performance.now() >= deadline)
        return result(false, 0, new Map(), [{ node: this.#d.nodeId, holds: false }]);
      await sleep(POLL_MS);
    }
    const target = new Map(this.#d.acked());
    const others = await this.#otherNodes();
    const total = others.length + 1;
    const needed = wanted === 'all' ? total : wanted === 'quorum' ? Math.floor(total / 2) + 1 : wanted;
    const seen = new Map<number, { holds: boolean; positions?: Record<string, number> }>(
      others.map((n) => [n, { holds: false }]),
    );
    const holders = () => 1 + [...seen.values()].filter((s) => s.holds).length;
    const report = (reached: boolean) =>
      result(reached, needed, target, [
        { node: this.#d.nodeId, holds: true },
        ...[...seen].map(([node, s]) => ({ node, ...s })),
      ]);
    for (;;) {
      if (holders() >= needed) return report(true);
      const left = deadline - performance.now();
      if (left <= 0) return report(false);
      await Promise.all(
        [...seen].map(async ([node, s]) => {
          if (s.holds) return;
          const positions = await this.#sharedPositions(node, Math.min(left, 1000));
          if (positions === undefined) return;
          s.positions = positions;
          s.holds = [...target].every(([shard, seq]) => (positions[String(shard)] ?? 0) >= seq);
        }),
      );
      if (holders() < needed) await sleep(POLL_MS);
    }
  }

  #otherNodes(): Promise<readonly number[]> {
    const now = performance.now();
    if (this.#others === undefined || now - this.#others.at > NODES_TTL_MS) {
      const nodes = this.#d.otherNodes();
      this.#others = { at: now, nodes };
      // A failed read is not reused.
      nodes.catch(() => {
        if (this.#others?.nodes === nodes) this.#others = undefined;
      });
    }
    return this.#others.nodes;
  }

  #sharedPositions(node: number, timeoutMs: number): Promise<Record<string, number> | undefined> {
    let poll = this.#polls.get(node);
    if (poll === undefined) {
      poll = this.#positions(node, timeoutMs).finally(() => this.#polls.delete(node));
      this.#polls.set(node, poll);
    }
    return poll;
  }

  async #positions(node: number, timeoutMs: number): Promise<Record<string, number> | undefined> {
    try {
      const m = await this.#d.nc.request(
        nodeVerifySubject(this.#d.streamPrefix, node),
        JSON.stringify({ op: 'positions' } satisfies VerifyRequest),
        { timeout: Math.max(1, timeoutMs) },
      );
      return (JSON.parse(m.string()) as Pick<HelloAnswer, 'positions'>).positions;
    } catch {
      return undefined; // not answering (stopped, unreachable): it does not hold the write as far as we know
    }
  }
}
