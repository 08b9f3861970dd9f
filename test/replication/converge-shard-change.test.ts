/**
 * Changing `shards` on a running cluster: three `harmonylite` processes on one
 * real nats-server, each with an application writing to its database all the
 * time, are restarted one at a time with a new shard count (1 -> 4, then
 * 4 -> 2). While the counts differ, a node publishes to streams the others do
 * not have in their own count; every node consumes every change stream under
 * the prefix, so each node's writes reach the others at once, and at the end
 * every node holds exactly what was written (every row at its last version,
 * nothing pending, nothing dead-lettered).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import type { Config } from '../../src/config/config.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  writeConfigFile,
  type CliNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  actualRows,
  allExpected,
  debug,
  diffRows,
  internalState,
  ITEMS_SCHEMA,
  RowWriter,
  writeContinuously,
} from './fault-helpers.ts';

const BEYOND = /change streams exist beyond this node's shards/;

/** Rows `writer` held at `snapshot` that are not on `dbPath` at that version or later (deleted since: not checked). */
function missing(dbPath: string, writer: RowWriter, snapshot: ReadonlyMap<number, number>): number[] {
  const have = new Map(actualRows(dbPath).map((r) => [r[0], r[2]]));
  const out: number[] = [];
  for (const [id, ver] of snapshot) {
    if (!writer.expected.has(id)) continue;
    if ((have.get(id) ?? 0) < ver) out.push(id);
  }
  return out;
}

describe('changing shards by a rolling restart', () => {
  it('1 -> 4 -> 2, one node at a time, writes going on everywhere: every write reaches every node', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const clis: (CliNode | undefined)[] = [undefined, undefined, undefined];
    const writers: RowWriter[] = [];
    let load: ReturnType<typeof writeContinuously> | undefined;
    let passed = false;
    const configs: Config[] = [1, 2, 3].map((nodeId) =>
      nodeConfig({
        dir: dir.path,
        nodeId,
        urls: [server.url],
        configure: (c) => {
          c.replication_log.shards = 1;
          c.replication_log.max_batch_changes = 20;
          c.nats.reconnect_wait_seconds = 0.25;
          c.snapshot.enabled = false;
        },
      }),
    );
    const start = async (i: number, shards: number): Promise<CliNode> => {
      const config = configs[i]!;
      config.replication_log.shards = shards;
      const path = writeConfigFile(config, join(dir.path, `node-${i + 1}.toml`));
      const cli = spawnCli(['-config', path]);
      clis[i] = cli;
      await cli.waitForOutput(/HarmonyLite node started/, 180_000); // slow on a loaded machine: tsx, catch-up
      debug(`node ${i + 1} started with shards = ${shards}`);
      return cli;
    };
    const stop = async (i: number): Promise<void> => {
      const cli = clis[i]!;
      const t0 = performance.now();
      cli.kill('SIGTERM');
      assert.equal(await cli.exited, 0, `node ${i + 1} stopped cleanly`);
      debug(`node ${i + 1} stopped in ${Math.round(performance.now() - t0)} ms`);
    };
    try {
      for (const c of configs) createDatabase(c.db_path, ITEMS_SCHEMA);
      for (let i = 0; i < 3; i++) await start(i, 1);
      for (let i = 0; i < 3; i++) writers.push(new RowWriter(configs[i]!.db_path, i + 1));
      load = writeContinuously(writers, { opsPerTxn: 3, pauseMs: 40 });

      for (const shards of [4, 2]) {
        for (let i = 0; i < 3; i++) {
          await stop(i);
          await start(i, shards);
          // Mixed counts now: this node's writes (routed over its new count) reach the others,
          // and theirs reach it, before the next node restarts.
          const w = writers[i]!;
          const opsAtStart = w.ops;
          await waitFor(`node ${i + 1} to write on`, () => w.ops >= opsAtStart + 30);
          const t0 = performance.now();
          const mine = new Map(w.expected);
          const theirs = writers.filter((o) => o !== w).map((o) => [o, new Map(o.expected)] as const);
          await waitFor(
            `node ${i + 1} (shards = ${shards}) and the others to exchange their writes`,
            () =>
              configs.every((c, j) => j === i || missing(c.db_path, w, mine).length === 0) &&
              theirs.every(([o, snap]) => missing(configs[i]!.db_path, o, snap).length === 0),
            {
              timeoutMs: 120_000,
              seen: () =>
                configs.map((c, j) => (j === i ? '-' : missing(c.db_path, w, mine).slice(0, 5).join(' '))),
            },
          );
          debug(`writes exchanged in ${Math.round(performance.now() - t0)} ms`);
          assert.equal(load.error, undefined);
        }
      }
      // A node with fewer shards said it consumes the others' streams too.
      assert.ok(clis[0]!.output.some((l) => BEYOND.test(l)) || clis[2]!.output.some((l) => BEYOND.test(l)));

      await load.stop();
      assert.equal(load.error, undefined);
      const tEnd = performance.now();
      const paths = configs.map((c) => c.db_path);
      await waitFor(
        'every node to hold exactly what was written, nothing pending',
        () =>
          allExpected(paths, writers) &&
          paths.every(
            (p) => JSON.stringify(internalState(p)) === '{"pending":0,"globalLog":0,"deadLetters":0}',
          ),
        {
          timeoutMs: 60_000,
          seen: () =>
            paths.map(
              (p) => `${diffRows(p, writers).slice(0, 5).join(', ')} ${JSON.stringify(internalState(p))}`,
            ),
        },
      );
      debug(`converged ${Math.round(performance.now() - tEnd)} ms after the writes stopped`);
      const ops = writers.reduce((s, w) => s + w.ops, 0);
      debug(`converged: ${ops} operations, ${actualRows(paths[0]!).length} rows`);
      assert.ok(ops > 300, `writes went on during the restarts (${ops} operations)`);
      passed = true;
    } finally {
      await load?.stop();
      for (const w of writers) w.close();
      for (const cli of clis) {
        if (cli === undefined) continue;
        cli.kill('SIGTERM');
        await cli.exited;
        if (!passed || process.env.FAULT_DEBUG)
          process.stderr.write(
            `${cli.output
              .filter((l) => !l.includes('"nats-server"'))
              .slice(-40)
              .join('\n')}\n`,
          );
      }
      await server.close();
    }
  });
});
