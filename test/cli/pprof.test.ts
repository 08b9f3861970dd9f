/**
 * `-pprof ADDR` (HarmonyLite's profiler flag): a running node serves a V8 CPU
 * profile (.cpuprofile: Chrome DevTools, speedscope) and a heap snapshot
 * (.heapsnapshot) on demand.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { createDatabase, nodeConfig, spawnCli, writeConfigFile } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { freePorts } from '../replication/fault-helpers.ts';

test('-pprof serves a CPU profile and a heap snapshot of the running node', async () => {
  using dir = tempDir();
  const config = nodeConfig({ dir: dir.path, nodeId: 1, urls: [] });
  config.snapshot.enabled = false;
  createDatabase(config.db_path, 'CREATE TABLE t (id INTEGER PRIMARY KEY)');
  const [port] = await freePorts(1);
  const base = `http://127.0.0.1:${port}/debug/pprof`;
  const cli = spawnCli([
    '-config',
    writeConfigFile(config, join(dir.path, 'n.toml')),
    '-pprof',
    `127.0.0.1:${port}`,
  ]);
  try {
    await cli.waitForOutput(/HarmonyLite node started/, 30_000);
    assert.ok(cli.output.some((l) => l.includes('profiler listening')));

    const index = await fetch(`${base}/`);
    assert.equal(index.status, 200);
    assert.match(await index.text(), /\/debug\/pprof\/profile\?seconds=N/);

    const cpu = await fetch(`${base}/profile?seconds=1`);
    assert.equal(cpu.status, 200);
    assert.match(cpu.headers.get('content-disposition') ?? '', /filename="harmonylite-\d+-.*\.cpuprofile"/);
    // The Chrome DevTools / speedscope format: a node tree, samples and time deltas.
    const profile = (await cpu.json()) as {
      nodes: unknown[];
      samples: number[];
      timeDeltas: number[];
      startTime: number;
      endTime: number;
    };
    assert.ok(profile.nodes.length > 0);
    assert.equal(profile.samples.length, profile.timeDeltas.length);
    assert.ok(profile.endTime - profile.startTime >= 900_000, 'about one second, in microseconds');

    const heap = await fetch(`${base}/heap`);
    assert.equal(heap.status, 200);
    assert.match(heap.headers.get('content-disposition') ?? '', /\.heapsnapshot"$/);
    const snapshot = (await heap.json()) as {
      snapshot: { meta: { node_fields: string[] }; node_count: number };
    };
    assert.ok(snapshot.snapshot.meta.node_fields.includes('name'));
    assert.ok(snapshot.snapshot.node_count > 1000);

    assert.equal((await fetch(`${base}/profile?seconds=0`)).status, 400);
    assert.equal((await fetch(`${base}/nope`)).status, 404);
    cli.kill('SIGINT');
    assert.equal(await cli.exited, 0);
  } finally {
    if (cli.child.exitCode === null) cli.kill('SIGKILL');
  }
});
