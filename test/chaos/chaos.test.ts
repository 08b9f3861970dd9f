/**
 * A short seeded chaos run for CI. Longer runs: npm run chaos -- --seed N --duration-seconds S.
 * On failure the message carries the seed, the fault schedule and the first differing rows.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runChaos } from './chaos-run.ts';

test(
  'three nodes under faults converge with no lost write, no crash, no dead letter',
  { timeout: 420_000 },
  async () => {
    const seed = Number(process.env.CHAOS_SEED ?? 20261127);
    const report = await runChaos({ seed, durationMs: 30_000, faultEveryMs: 3000 });
    const summary = JSON.stringify(report, null, 2);
    assert.ok(report.faults.length >= 3, `expected at least 3 faults:\n${summary}`);
    assert.ok(report.writes > 200, `expected writes:\n${summary}`);
    assert.deepEqual(report.crashes, [], `node crashed:\n${summary}`);
    assert.deepEqual(report.divergences, [], `divergence:\n${summary}`);
    assert.deepEqual(report.lostWrites, [], `lost writes:\n${summary}`);
    assert.equal(report.deadLetters, 0, `dead letters:\n${summary}`);
  },
);
