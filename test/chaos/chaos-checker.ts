/**
 * The verdict of a chaos run, once writes stopped and the cluster is quiet:
 *  - every user table is identical on every node (first differing rows reported);
 *  - no lost write: every upsert a writer committed is in the stream history
 *    (including what faults discarded from the streams), and every node's
 *    tables equal the fold of that history by version (last writer wins: the
 *    newest version per key, ties to the higher node id, whatever the order;
 *    where two such rows hold the same UNIQUE value, the newer keeps it and
 *    the older is displaced);
 *  - no dead letters.
 */
import Database from 'better-sqlite3';
import { decodeBody } from '../../src/codec/change-batch-codec.ts';
import { fromWire } from '../../src/codec/sql-value.ts';
import { DEAD_LETTERS } from '../../src/cdc/names.ts';
import { parseMsgId } from '../../src/replication/msg-id.ts';
import { tableContents } from '../helpers/node-harness.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { CHAOS_TABLES, type ChaosNode } from './chaos-cluster.ts';
import type { Write } from './chaos-writers.ts';
import type { ReadHistory } from './stream-history.ts';

export interface ChaosVerdict {
  readonly streamChanges: number;
  readonly divergences: string[];
  readonly lostWrites: string[];
  /** Dead letters other than the hostile publisher's. */
  readonly deadLetters: number;
  /** Hostile messages some node did not dead-letter. */
  readonly missingDeadLetters: string[];
  /** Writes a fault labelled (e.g. made while a node was down for a restore): how many, how many lost. */
  readonly labelledWrites: Record<string, { readonly writes: number; readonly lost: number }>;
}

const keyOf = (table: string, row: Record<string, unknown>) =>
  table === 'kv' ? String(row.k) : table === 'users' ? String(row.id) : `${String(row.a)}/${String(row.b)}`;

/**
 * The UNIQUE rule over folded rows: newest first, a row whose email a newer
 * kept row holds is displaced. Order-free, as the appliers must be.
 */
function withoutDisplaced(
  rows: Map<string, string | undefined>,
  emails: ReadonlyMap<string, string>,
  versions: ReadonlyMap<string, [number, number]>,
): Map<string, string | undefined> {
  const version = (k: string) => versions.get(`users\u0000${k}`)!;
  const live = [...rows].filter(([, v]) => v !== undefined);
  live.sort(([a], [b]) => version(b)[0] - version(a)[0] || version(b)[1] - version(a)[1]);
  const taken = new Set<string>();
  const kept = new Map<string, string | undefined>();
  for (const [k, v] of live) {
    const email = emails.get(k)!;
    if (taken.has(email)) continue;
    taken.add(email);
    kept.set(k, v);
  }
  return kept;
}

/** Waits up to `timeoutMs` for identical tables; returns the first difference of each table that stays different. */
export async function waitForIdenticalTables(
  nodes: readonly ChaosNode[],
  timeoutMs: number,
): Promise<string[]> {
  try {
    await waitFor(
      'identical tables on every node',
      () => CHAOS_TABLES.every((t) => new Set(nodes.map((n) => tableContents(n.dbPath, t))).size === 1),
      { timeoutMs, intervalMs: 250 },
    );
    return [];
  } catch {
    const out: string[] = [];
    for (const t of CHAOS_TABLES) {
      const contents = nodes.map((n) => tableContents(n.dbPath, t));
      if (new Set(contents).size > 1) out.push(`${t}: ${firstDifference(contents)}`);
    }
    return out;
  }
}

/** Checks the writes and every node's tables against the stream history. */
export function checkAgainstHistory(
  nodes: readonly ChaosNode[],
  writes: readonly Write[],
  history: ReadHistory,
  hostile: readonly string[] = [],
): ChaosVerdict {
  const hostileSet = new Set(hostile);
  const model = new Map<string, Map<string, string | undefined>>(CHAOS_TABLES.map((t) => [t, new Map()]));
  const seenTokens = new Set<string>();
  /** The email of each folded users row. */
  const emails = new Map<string, string>();
  /** Per table and key, the version (and origin) of the change the model holds. */
  const versions = new Map<string, [number, number]>();
  let streamChanges = 0;
  for (const messages of history.shards) {
    const applied = new Map<number, number>();
    for (const m of messages) {
      if (hostileSet.has(`${m.shard}:${m.seq}`)) continue; // no node may apply it: checked below
      const id = parseMsgId(m.msgId);
      if (id !== undefined) {
        if (id.seq <= (applied.get(id.origin) ?? 0)) continue; // a re-published batch: receivers skip it too
        applied.set(id.origin, id.seq);
      }
      for (const rec of decodeBody(m.data)) {
        const p = rec.Payload;
        const row = Object.fromEntries(Object.entries(p.Row).map(([k, v]) => [k, fromWire(v)]));
        const key = keyOf(p.TableName, row);
        streamChanges++;
        const token =
          p.Type === 'delete'
            ? undefined
            : p.TableName !== 'pairs'
              ? String(row.v)
              : Buffer.from(row.v as Uint8Array).toString();
        if (token !== undefined) seenTokens.add(token);
        const version = p.Version ?? 0;
        const held = versions.get(`${p.TableName}\u0000${key}`);
        if (held !== undefined && !(version > held[0] || (version === held[0] && rec.FromNodeId > held[1])))
          continue; // an older version: every node skips it
        versions.set(`${p.TableName}\u0000${key}`, [version, rec.FromNodeId]);
        model.get(p.TableName)!.set(key, token);
        if (p.TableName === 'users' && token !== undefined) emails.set(key, String(row.email));
      }
    }
  }
  model.set('users', withoutDisplaced(model.get('users')!, emails, versions));
  const lost = writes.filter((w) => w.op === 'upsert' && !seenTokens.has(w.token!));
  const lostWrites = lost.map(
    (w) => `${w.table} ${w.key} ${w.token}${w.label === undefined ? '' : ` (${w.label})`}`,
  );
  const labelledWrites: Record<string, { writes: number; lost: number }> = {};
  for (const w of writes) {
    if (w.label === undefined || w.op !== 'upsert') continue;
    const entry = (labelledWrites[w.label] ??= { writes: 0, lost: 0 });
    entry.writes++;
    if (!seenTokens.has(w.token!)) entry.lost++;
  }

  const divergences: string[] = [];
  let deadLetters = 0;
  const missingDeadLetters: string[] = [];
  for (const n of nodes) {
    const db = new Database(n.dbPath, { readonly: true });
    try {
      const actual = new Map<string, Map<string, string>>([
        [
          'kv',
          new Map(
            (db.prepare('SELECT k, v FROM kv').all() as { k: number; v: string }[]).map((r) => [
              String(r.k),
              r.v,
            ]),
          ),
        ],
        [
          'users',
          new Map(
            (db.prepare('SELECT id, v FROM users').all() as { id: number; v: string }[]).map((r) => [
              String(r.id),
              r.v,
            ]),
          ),
        ],
        [
          'pairs',
          new Map(
            (db.prepare('SELECT a, b, v FROM pairs').all() as { a: string; b: number; v: Buffer }[]).map(
              (r) => [`${r.a}/${r.b}`, r.v.toString()],
            ),
          ),
        ],
      ]);
      for (const t of CHAOS_TABLES) {
        const want = [...model.get(t)!].filter(([, v]) => v !== undefined);
        const have = actual.get(t)!;
        if (want.length !== have.size || want.some(([k, v]) => have.get(k) !== v)) {
          const diff =
            want.find(([k, v]) => have.get(k) !== v) ??
            [...have].find(([k]) => model.get(t)!.get(k) === undefined);
          divergences.push(
            `node ${n.id} ${t} differs from the stream fold: first at ${JSON.stringify(diff)} (have ${JSON.stringify(diff ? have.get(diff[0]) : undefined)})`,
          );
        }
      }
      const lettered = new Set(
        (db.prepare(`SELECT shard, stream_seq FROM "${DEAD_LETTERS}"`).raw().all() as [number, number][]).map(
          ([shard, seq]) => `${shard}:${seq}`,
        ),
      );
      for (const h of hostileSet)
        if (!lettered.has(h))
          missingDeadLetters.push(`node ${n.id} did not dead-letter hostile message ${h}`);
      deadLetters += [...lettered].filter((l) => !hostileSet.has(l)).length;
    } finally {
      db.close();
    }
  }
  return { streamChanges, divergences, lostWrites, deadLetters, missingDeadLetters, labelledWrites };
}

function firstDifference(contents: string[]): string {
  const rows = contents.map((c) => JSON.parse(c) as unknown[]);
  const n = Math.max(...rows.map((r) => r.length));
  for (let i = 0; i < n; i++) {
    const at = rows.map((r) => JSON.stringify(r[i]));
    if (new Set(at).size > 1) return `row ${i}: ${at.join(' vs ')}`;
  }
  return 'lengths differ';
}
