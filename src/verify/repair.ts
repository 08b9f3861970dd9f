/**
 * Repair after verify: makes every diverged key settle the same way on every
 * node without deciding anything last writer wins would not decide.
 * - A node whose row escaped capture (changed or deleted while the triggers
 *   were absent, neither indexed nor logged) logs it as a change, as the
 *   capture safety net does (invariant 9): it is an application write, and
 *   replicates with a new version.
 * - Otherwise the node holding the newest version re-publishes it with its
 *   original version and origin (a tombstone as a delete): nodes that lack it
 *   apply it, nodes that hold it or anything newer skip it.
 */
import { newest, type ClusterVerify, type KeyDifference } from './cluster-verify.ts';
import type { WireEntry } from './verify-protocol.ts';

export interface RepairAction {
  readonly node: number;
  readonly table: string;
  readonly kind: 'republish' | 'reconcile';
  /** Keys (base64) concerned. */
  readonly keys: readonly string[];
}

export interface RepairOutcome {
  readonly action: RepairAction;
  /** What the node did, one line per key or table. */
  readonly lines: readonly string[];
}

/** The actions that settle `differences` (the diverged ones). */
export function planRepair(differences: readonly KeyDifference[]): RepairAction[] {
  const reconcile = new Map<string, { node: number; table: string; keys: string[] }>();
  const republish = new Map<string, { node: number; table: string; keys: string[] }>();
  const add = (m: typeof reconcile, node: number, table: string, pk: string) => {
    const id = `${node}\u0000${table}`;
    let a = m.get(id);
    if (a === undefined) m.set(id, (a = { node, table, keys: [] }));
    a.keys.push(pk);
  };
  for (const d of differences) {
    if (d.status !== 'diverged') continue;
    const escaped = [...d.entries].filter(([, e]) => e?.u === true && e.l !== true);
    if (escaped.length > 0) {
      for (const [node] of escaped) add(reconcile, node, d.table, d.pk);
      continue;
    }
    const top = newest(d.entries);
    if (top === undefined) continue;
    const holder = [...d.entries].find(([, e]) => e !== undefined && e.v === top.v && e.o === top.o && !e.u);
    if (holder !== undefined) add(republish, holder[0], d.table, d.pk);
  }
  return [
    ...[...reconcile.values()].map((a) => ({ ...a, kind: 'reconcile' as const })),
    ...[...republish.values()].map((a) => ({ ...a, kind: 'republish' as const })),
  ];
}

/** Runs the actions; `describeKey` renders a key for the lines printed. */
export async function runRepair(
  verify: ClusterVerify,
  actions: readonly RepairAction[],
  differences: readonly KeyDifference[],
  describeKey: (pk: string) => string,
): Promise<RepairOutcome[]> {
  const entryOf = new Map(differences.map((d) => [`${d.table}\u0000${d.pk}`, d.entries]));
  const out: RepairOutcome[] = [];
  for (const action of actions) {
    const lines: string[] = [];
    if (action.kind === 'reconcile') {
      const r = await verify.reconcile(action.node, action.table);
      lines.push(
        `node ${action.node}: ${action.table}: logged ${r.escaped} row(s) that escaped capture as new changes (${action.keys.map(describeKey).join(', ')})`,
      );
    } else {
      const expect = action.keys.map(
        (pk) => entryOf.get(`${action.table}\u0000${pk}`)?.get(action.node) as WireEntry,
      );
      const r = await verify.republish(action.node, action.table, [...action.keys], expect);
      for (const p of r.published)
        lines.push(
          `node ${action.node}: ${action.table} ${describeKey(p.pk)}: re-published ${p.type === 'delete' ? 'its delete' : 'the row'} at version ${p.version} (origin ${p.origin})`,
        );
      for (const s of r.skipped)
        lines.push(
          `node ${action.node}: ${action.table} ${describeKey(s.pk)}: not re-published: ${s.reason}`,
        );
    }
    out.push({ action, lines });
  }
  return out;
}
