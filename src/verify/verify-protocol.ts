/**
 * What verify's requests and answers carry over NATS request/reply (JSON).
 * Every node subscribes to `<stream_prefix>-verify` (discovery: every node
 * answers) and `<stream_prefix>-verify.<node id>` (questions to one node).
 * Keys travel as base64 of their canonical bytes, hashes as decimal strings.
 */

export function verifySubject(streamPrefix: string): string {
  return `${streamPrefix}-verify`;
}

export function nodeVerifySubject(streamPrefix: string, nodeId: number): string {
  return `${streamPrefix}-verify.${nodeId}`;
}

export type VerifyRequest =
  | { op: 'hello' }
  /** The applied stream positions alone (polled while waiting for a write: cheaper than hello). */
  | { op: 'positions' }
  /** Children digests of tree nodes at `level` (`prefixes` null: the root alone). */
  | { op: 'tree'; session: string; table: string; level: number; prefixes: number[] | null }
  /** The keys of leaf buckets, one scan per session and bucket set, answered in pages. */
  | { op: 'entries'; session: string; table: string; buckets: number[]; offset: number; limit: number }
  /** Re-publish these keys as this node's index holds them (original version and origin). */
  | { op: 'republish'; table: string; keys: string[]; expect: WireEntry[] }
  /** Log the rows that differ from the index as changes (writes that escaped capture). */
  | { op: 'reconcile'; table: string }
  /** Wait until this node's changes up to global change id `after` are on `nodes` nodes. */
  | { op: 'wait'; after: number | 'last'; nodes: 'all' | 'quorum' | number; timeoutMs: number };

export interface HelloAnswer {
  nodeId: number;
  tables: string[];
  /** Applied stream position per shard ("1": 42). */
  positions: Record<string, number>;
  /** Local changes not yet published. */
  pending: number;
  /** Milliseconds since the epoch on the node. */
  now: number;
}

/** One digest: [sum as decimal, count]. */
export type WireDigest = [string, number];

export interface TreeAnswer {
  digests: WireDigest[];
}

/** One key on one node: version -1 = not in the index; h null = no row; u = row is not what the index says; l = a logged change holds it. */
export interface WireEntry {
  pk: string;
  v: number;
  o: number;
  h: string | null;
  u: boolean;
  l?: boolean;
}

export interface EntriesAnswer {
  entries: WireEntry[];
  /** Keys in the requested buckets in all. */
  total: number;
}

export interface RepublishAnswer {
  published: { pk: string; version: number; origin: number; type: 'insert' | 'delete' }[];
  /** Keys whose state here changed since verify read it, or that cannot be re-published (displaced rows). */
  skipped: { pk: string; reason: string }[];
}

export interface ReconcileAnswer {
  escaped: number;
}

export interface ErrorAnswer {
  error: string;
}
