/**
 * The benchmark's short mode (`npm run bench -- --short`), run from source as
 * CI's smoke test: real nats-server and node processes, every phase runs and
 * writes its JSON and chart. No thresholds: this machine is shared; the figures
 * only have to be measurements (positive, finite, in the right places).
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { tempDir } from '../helpers/temp-dir.ts';

const ROOT = new URL('../..', import.meta.url).pathname;
const dir = tempDir('hl-bench-smoke-');
after(() => dir.remove());

function runBench(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'run.ts'), ...args], {
      cwd: ROOT,
      env: { ...process.env, HL_BENCH_SOURCE: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    child.on('exit', (code) => resolve({ code, out }));
  });
}

const positive = (v: unknown, what: string) =>
  assert.ok(typeof v === 'number' && Number.isFinite(v) && v > 0, `${what}: ${String(v)}`);

test(
  'bench --short runs every phase on a real cluster and writes its JSON, table and chart',
  { timeout: 180_000 },
  async () => {
    const { code, out } = await runBench(['--short', '--out', dir.path]);
    assert.equal(code, 0, out);
    assert.match(out, /\| shards \| replicated rows\/s/, 'the table is printed');
    const report = JSON.parse(readFileSync(join(dir.path, 'short.json'), 'utf8')) as {
      mode: string;
      shards: { shards: number; rowsPerSecond: number; latency: { samples: number; p99Ms: number } }[];
      catchup: { rowsPerSecond: number };
      limits: { plainApplyRowsPerSecond: number; rawPublishMsgsPerSecond: number };
    };
    assert.equal(report.mode, 'short');
    assert.deepEqual(
      report.shards.map((s) => s.shards),
      [1, 2],
    );
    for (const s of report.shards) {
      positive(s.rowsPerSecond, `shards ${s.shards} rows/s`);
      assert.equal(s.latency.samples, 1000, `shards ${s.shards}: every latency probe arrived`);
      positive(s.latency.p99Ms, `shards ${s.shards} p99`);
    }
    positive(report.catchup.rowsPerSecond, 'catch-up rows/s');
    positive(report.limits.plainApplyRowsPerSecond, 'plain apply limit');
    positive(report.limits.rawPublishMsgsPerSecond, 'raw publish limit');
    assert.ok(existsSync(join(dir.path, 'short.svg')), 'the chart is written');
    assert.match(readFileSync(join(dir.path, 'short.svg'), 'utf8'), /^<svg/);
  },
);
