/** How `-verify` prints a report. Pure. */
import { VERSIONS_PER_MS } from '../replication/hybrid-clock.ts';
import type { KeyDifference, VerifyReport } from './cluster-verify.ts';
import type { WireEntry } from './verify-protocol.ts';

/** One node's state of a key, e.g. `version 1733580000000001 (origin 2, 2024-…Z) live`. */
export function describeEntry(e: WireEntry | undefined): string {
  if (e === undefined) return 'no such key';
  const version =
    e.v < 0
      ? 'not in the index'
      : `version ${e.v} (origin ${e.o}${e.v >= VERSIONS_PER_MS ? `, ${new Date(Math.floor(e.v / VERSIONS_PER_MS)).toISOString()}` : ''})`;
  const row = e.h === null ? 'no row' : 'row';
  const note = !e.u
    ? ''
    : e.l === true
      ? ', local write on its way'
      : ', row differs from the index (escaped capture)';
  return `${version}, ${row}${note}`;
}

function describeDifference(d: KeyDifference, describeKey: (pk: string) => string): string[] {
  const lines = [`  ${d.status === 'diverged' ? 'DIFFERS' : 'in flight'} ${describeKey(d.pk)}`];
  for (const [node, e] of d.entries) lines.push(`    node ${node}: ${describeEntry(e)}`);
  return lines;
}

function nodeList(nodes: readonly number[], one: string, many: string): string {
  return nodes.length === 1 ? `node ${nodes[0]} ${one}` : `nodes ${nodes.join(', ')} ${many}`;
}

export function formatReport(r: VerifyReport, describeKey: (pk: string) => string): string {
  const lines: string[] = [];
  for (const t of r.tables) {
    const others = r.nodes.filter((n) => !t.agreeing.includes(n));
    const agree =
      others.length === 0
        ? 'all nodes agree'
        : t.agreeing.length === 0
          ? nodeList(others, 'differs', 'differ')
          : `${nodeList(t.agreeing, 'agrees', 'agree')}, ${nodeList(others, 'differs', 'differ')}`;
    lines.push(`table ${t.table}: ${t.rows} rows checked; ${agree}`);
    for (const d of t.differences) lines.push(...describeDifference(d, describeKey));
  }
  const stats = `${r.rounds} round(s), ${(r.ms / 1000).toFixed(2)} s, ${r.bytes} bytes exchanged`;
  if (r.diverged === 0 && r.inFlight === 0) {
    lines.push(`all ${r.nodes.length} nodes agree on ${r.rows} rows (${stats})`);
  } else {
    lines.push(
      `${r.diverged} key(s) differ, ${r.inFlight} in flight (still being replicated) across ${r.nodes.length} nodes (${stats})`,
    );
  }
  return `${lines.join('\n')}\n`;
}
