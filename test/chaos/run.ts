/**
 * `npm run chaos -- [--seed N] [--runs R] [--duration-seconds S] [--faults a,b]`: long chaos runs on demand.
 * Prints each run's figures; exits 1 on the first failing run, with its seed and fault schedule.
 */
import { parseArgs } from 'node:util';
import { FAULTS, isFailed, runChaos, type FaultKind } from './chaos-run.ts';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    runs: { type: 'string', default: '1' },
    'duration-seconds': { type: 'string', default: '120' },
    faults: { type: 'string' },
  },
});
const faults = values.faults?.split(',').map((f) => f.trim()) as FaultKind[] | undefined;
const unknown = faults?.filter((f) => !(FAULTS as readonly string[]).includes(f)) ?? [];
if (unknown.length > 0) {
  process.stderr.write(`Error: unknown fault ${unknown.join(', ')}\nTry: --faults ${FAULTS.join(',')}\n`);
  process.exit(2);
}
let failed = false;
const totals = {
  runs: 0,
  faults: 0,
  writes: 0,
  divergences: 0,
  lostWrites: 0,
  restores: 0,
  pendingAtStop: 0,
  fullDiskSaveFailures: 0,
};
for (let i = 0; i < Number(values.runs); i++) {
  const seed = values.seed !== undefined ? Number(values.seed) + i : Math.floor(Math.random() * 2 ** 31);
  const log = (l: string) => process.stderr.write(`[seed ${seed}] ${l}\n`);
  let report;
  try {
    report = await runChaos({
      seed,
      durationMs: Number(values['duration-seconds']) * 1000,
      ...(faults ? { faults } : {}),
      log,
    });
  } catch (err) {
    process.stdout.write(`FAILED seed ${seed}\n${err instanceof Error ? err.message : String(err)}\n`);
    failed = true;
    break;
  }
  totals.runs++;
  totals.faults += Object.values(report.faultCounts).reduce((a, b) => a + b, 0);
  totals.writes += report.writes;
  totals.divergences += report.divergences.length;
  totals.lostWrites += report.lostWrites.length;
  totals.restores += report.snapshots.restores;
  totals.pendingAtStop += report.snapshots.pendingAtStop;
  totals.fullDiskSaveFailures += report.snapshots.fullDiskSaveFailures;
  const ok = !isFailed(report);
  process.stdout.write(`${JSON.stringify({ ok, ...report, faults: report.faults.length })}\n`);
  if (!ok) {
    process.stdout.write(
      `FAILED seed ${seed}\nfault schedule:\n${report.faults.join('\n')}\n${JSON.stringify(report, null, 2)}\n`,
    );
    failed = true;
    break;
  }
}
process.stdout.write(`totals: ${JSON.stringify(totals)}\n`);
process.exit(failed ? 1 : 0);
