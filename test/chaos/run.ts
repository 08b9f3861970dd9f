/**
 * `npm run chaos -- [--seed N] [--runs R] [--duration-seconds S]`: long chaos runs on demand.
 * Prints each run's figures; exits 1 on the first failing run, with its seed and fault schedule.
 */
import { parseArgs } from 'node:util';
import { runChaos } from './chaos-run.ts';

const { values } = parseArgs({
  options: {
    seed: { type: 'string' },
    runs: { type: 'string', default: '1' },
    'duration-seconds': { type: 'string', default: '120' },
  },
});
let failed = false;
const totals = { runs: 0, faults: 0, writes: 0, divergences: 0, lostWrites: 0 };
for (let i = 0; i < Number(values.runs); i++) {
  const seed = values.seed !== undefined ? Number(values.seed) + i : Math.floor(Math.random() * 2 ** 31);
  const report = await runChaos({
    seed,
    durationMs: Number(values['duration-seconds']) * 1000,
    log: (l) => process.stderr.write(`[seed ${seed}] ${l}\n`),
  });
  totals.runs++;
  totals.faults += report.faults.filter((f) => !f.includes('restarted')).length;
  totals.writes += report.writes;
  totals.divergences += report.divergences.length;
  totals.lostWrites += report.lostWrites.length;
  const ok =
    report.divergences.length + report.lostWrites.length + report.crashes.length + report.deadLetters === 0;
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
