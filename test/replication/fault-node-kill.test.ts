/**
 * kill -9 of a node (a real `harmonylite` process) while it publishes a
 * stream of its own writes and applies the writes of others; the application
 * keeps writing to its database while the daemon is down; the node is
 * restarted and killed again while it publishes what was written during the
 * outage (shortly after its start), then restarted for good. Afterwards every node holds
 * exactly what was written (no loss: every row, at its last version; no
 * double effect: no older version re-applied over a newer one, no deleted row
 * back), nothing is pending, nothing is dead-lettered (invariants 1-4).
 *
 * The duplicate window is 1 s, shorter than a restart: a batch acknowledged
 * just before a kill and re-published after it lands in the stream again, and
 * receivers must drop it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { OUTBOX, quoteIdent as q } from '../../src/cdc/names.ts';
import type { Config } from '../../src/config/config.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  startNode,
  writeConfigFile,
  type CliNode,
  type TestNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  allExpected,
  assertClean,
  countOrigin,
  debug,
  diffRows,
  dumpLogs,
  ITEMS_SCHEMA,
  RowWriter,
  writeContinuously,
} from './fault-helpers.ts';

function configure(c: Config): void {
  c.replication_log.shards = 2;
  c.replication_log.max_batch_changes = 10;
  c.replication_log.duplicate_window = 1000;
  c.replication_log.max_entries = 100_000; // the outages must not outlast the stream's retention
  c.nats.reconnect_wait_seconds = 0.25;
  c.snapshot.enabled = false;
}

/** Batches persisted in the outbox and not yet marked published (in flight) in a database. */
function inFlightBatches(dbPath: string): number {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db
      .prepare(`SELECT count(*) FROM ${q(OUTBOX)} WHERE payload IS NOT NULL`)
      .pluck()
      .get() as number;
  } finally {
    db.close();
  }
}

describe('kill -9 of a node', () => {
  it('while it publishes and applies, and while it catches up on writes made during its outage: no loss, no double effect', async () => {
    using dir = tempDir();
    const server = await startNatsServer();
    const nodes: TestNode[] = [];
    const writers: RowWriter[] = [];
    const clis: CliNode[] = [];
    let load: ReturnType<typeof writeContinuously> | undefined;
    let passed = false;
    try {
      // Node 1: the CLI process that gets killed.
      const config1 = nodeConfig({ dir: dir.path, nodeId: 1, urls: [server.url], configure });
      createDatabase(config1.db_path, ITEMS_SCHEMA);
      const configPath = writeConfigFile(config1, join(dir.path, 'node-1.toml'));
      const startCli = async () => {
        const cli = spawnCli(['-config', configPath]);
        clis.push(cli);
        await cli.waitForOutput(/HarmonyLite node started/, 30_000);
        debug('node 1 started');
        return cli;
      };
      let cli = await startCli();
      // Node 2 writes too; node 3 only replicates.
      for (const id of [2, 3])
        nodes.push(
          await startNode({ dir: dir.path, nodeId: id, urls: [server.url], schema: ITEMS_SCHEMA, configure }),
        );
      const [b, c] = nodes as [TestNode, TestNode];
      const wa = new RowWriter(config1.db_path, 1);
      const wb = new RowWriter(b.dbPath, 2);
      writers.push(wa, wb);
      load = writeContinuously(writers, { opsPerTxn: 3, pauseMs: 5 });

      const kill = async (why: string): Promise<boolean> => {
        cli.kill('SIGKILL');
        assert.equal(await cli.exited, null, 'killed by the signal');
        const inFlight = inFlightBatches(config1.db_path) > 0;
        debug(`node 1 killed ${why}; a batch was in flight: ${inFlight}; ops ${wa.ops}`);
        return inFlight;
      };
      let killsWithBatchInFlight = 0;

      // 1. Killed in the middle of the stream, publishing its writes and applying node 2's.
      const seen = { mine: countOrigin(c.dbPath, 1), theirs: countOrigin(config1.db_path, 2) };
      await waitFor('node 1 to publish and apply', () => {
        return (
          countOrigin(c.dbPath, 1) >= seen.mine + 100 && countOrigin(config1.db_path, 2) >= seen.theirs + 50
        );
      });
      if (await kill('mid-stream')) killsWithBatchInFlight++;

      for (let round = 1; round <= 3; round++) {
        // The application goes on writing while the daemon is down.
        const opsAtKill = wa.ops;
        await waitFor('300 writes on node 1 while its daemon is down', () => wa.ops >= opsAtKill + 300);
        // Restarted; killed again while it publishes what was written during the outage.
        const before = countOrigin(c.dbPath, 1);
        cli = await startCli();
        await waitFor(
          'node 1 to publish some of its backlog',
          () => countOrigin(c.dbPath, 1) >= before + 20,
          {
            timeoutMs: 30_000,
          },
        );
        if (await kill('while catching up')) killsWithBatchInFlight++;
        // Another round only if no kill has hit a batch in flight yet (rare: it nearly always has one).
        if (killsWithBatchInFlight > 0) break;
      }
      assert.ok(
        killsWithBatchInFlight > 0,
        'at least one kill found a batch in flight (persisted, not yet marked published)',
      );

      // Writes made while it was down are published when it starts.
      const opsAtLastKill = wa.ops;
      await waitFor('writes while the daemon is down', () => wa.ops >= opsAtLastKill + 300);
      cli = await startCli();
      await waitFor('more writes after the last restart', () => wa.ops >= opsAtLastKill + 600);
      await load.stop();
      assert.equal(load.error, undefined);

      const paths = [config1.db_path, b.dbPath, c.dbPath];
      await waitFor('every node to hold exactly the rows written', () => allExpected(paths, writers), {
        timeoutMs: 40_000,
        intervalMs: 200,
        seen: () => ({
          diffs: paths.map((p) => diffRows(p, writers).slice(0, 5)),
          node1: cli.output.slice(-5),
        }),
      });
      for (const p of paths) assertClean(p);
      cli.kill('SIGINT');
      assert.equal(await cli.exited, 0);
      passed = true;
    } finally {
      await load?.stop();
      for (const w of writers) w.close();
      for (const cl of clis)
        if (cl.child.exitCode === null && cl.child.signalCode === null) cl.kill('SIGKILL');
      await Promise.allSettled(clis.map((cl) => cl.exited));
      await Promise.allSettled(nodes.map((n) => n.close()));
      for (const n of nodes) dumpLogs(`node ${n.config.node_id}`, n.logs.records, !passed);
      if (!passed || process.env.FAULT_DEBUG)
        clis.forEach((cl, i) =>
          process.stderr.write(
            `node 1 run ${i + 1}:\n${cl.output.filter((l) => !l.includes('"component":"nats-server"')).join('\n')}\n`,
          ),
        );
      await server.close();
    }
  });
});
