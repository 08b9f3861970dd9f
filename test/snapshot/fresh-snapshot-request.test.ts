/**
 * A node that must restore but finds no stored snapshot reaching the streams
 * asks the cluster for one (NATS request/reply) and waits, visibly, instead of
 * exiting; it exits only when no node can ever provide one. Real nodes on one
 * real nats-server, small streams that roll over, a local-directory store.
 */
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import type { Config } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { HarmonyLiteNode } from '../../src/node/harmonylite-node.ts';
import { unusableReason } from '../../src/snapshot/restore-plan.ts';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { createDatabase, LogCapture, nodeConfig, startNode, waitConverged } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import {
  SCHEMA,
  smallStreams,
  storedSnapshots,
  streamRanges,
  waitForRolloverAndSnapshot,
  writeRows,
} from './snapshot-test-kit.ts';

const root = tempDir('hl-fresh-snapshot-');
after(() => root.remove());
let n = 0;

/** A node that is opened in the background, so the test can watch its start. */
function openingNode(dir: string, nodeId: number, url: string, configure: (c: Config) => void) {
  const config = nodeConfig({ dir, nodeId, urls: [url], configure });
  createDatabase(config.db_path, SCHEMA);
  const logs = new LogCapture();
  const node = new HarmonyLiteNode({
    config,
    logger: createLogger({ verbose: false, format: 'json', nodeId, destination: logs }),
  });
  const opened = node.open();
  opened.catch(() => undefined);
  return { node, logs, config, dbPath: config.db_path, opened };
}

describe('joining when no stored snapshot reaches the streams', () => {
  it('asks the cluster, waits with degraded health and a metric, then restores the fresh snapshot', async () => {
    const dir = join(root.path, `asks-${++n}`);
    const storeDir = join(dir, 'snapshots');
    const oldOnly = join(dir, 'old-snapshots');
    mkdirSync(dir);
    await using server = await startNatsServer();
    const configure = smallStreams(storeDir);
    const a = await startNode({ dir, nodeId: 1, urls: [server.url], schema: SCHEMA, configure });
    const b = await startNode({ dir, nodeId: 2, urls: [server.url], schema: SCHEMA, configure });
    try {
      writeRows(a.dbPath, 1, 150, 'a');
      await waitConverged([a.dbPath, b.dbPath], ['items']);
      const old = await waitForRolloverAndSnapshot(server.url, a.config, storeDir);
      cpSync(storeDir, oldOnly, { recursive: true });
      // The streams roll past the old snapshot; the store then holds only it (the newer ones lost).
      writeRows(b.dbPath, 2001, 2200, 'b');
      await waitConverged([a.dbPath, b.dbPath], ['items']);
      // The leader's own schedule is done: from now on only a request makes it take one.
      await waitForRolloverAndSnapshot(server.url, a.config, storeDir);
      await waitFor('streams that discarded messages the old snapshot does not hold', async () => {
        const ranges = await streamRanges(server.url, a.config);
        const expected = {
          streamPrefix: a.config.nats.stream_prefix,
          shards: a.config.replication_log.shards,
        };
        return unusableReason(old, ranges, expected) !== undefined;
      });
      rmSync(storeDir, { recursive: true });
      cpSync(oldOnly, storeDir, { recursive: true });
      assert.equal((await storedSnapshots(storeDir))[0]!.name, old.name);

      const c = openingNode(dir, 3, server.url, configure);
      try {
        await waitFor('c waiting for a fresh snapshot', () => c.logs.has('waiting for a fresh snapshot'), {
          timeoutMs: 30_000,
          seen: () => c.logs.messages().slice(-5),
        });
        const waiting = (await c.node.metrics.snapshotRestoreWaiting.get()).values[0]?.value;
        const health = c.node.observability?.health.evaluate();
        await c.opened;
        assert.equal(waiting, 1, 'snapshot_restore_waiting while waiting');
        assert.equal(health?.status, 'degraded');
        assert.match(
          health?.failed[0]?.reason ?? '',
          /waiting for a fresh snapshot to restore: .*no snapshot reaches them/,
        );
        assert.ok(c.logs.has('Snapshot restored'), c.logs.messages().join('\n'));
        assert.ok(
          [a, b].some((x) => x.logs.has('answered a snapshot request')),
          'a running node answered the request',
        );
        const asked = [...a.logs.records, ...b.logs.records].find(
          (r) => r.msg === 'taking a snapshot' && /node 3 asked/.test(String(r.reason)),
        );
        assert.ok(
          asked,
          JSON.stringify(
            [...a.logs.records, ...b.logs.records].filter((r) => /snapshot/i.test(String(r.msg))),
          ),
        );
        assert.equal((await c.node.metrics.snapshotRestoreWaiting.get()).values[0]?.value, 0);
        assert.equal(
          c.node.observability?.health.evaluate().failed.find((f) => /snapshot/.test(f.reason)),
          undefined,
        );
        await waitConverged([a.dbPath, b.dbPath, c.dbPath], ['items']);
      } finally {
        await c.node.close();
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('exits, saying why, when every node that answers can never provide one', async () => {
    const dir = join(root.path, `never-${++n}`);
    const storeDir = join(dir, 'snapshots');
    mkdirSync(dir);
    await using server = await startNatsServer();
    // The only running node publishes but does not replicate: its positions say nothing.
    const a = await startNode({
      dir,
      nodeId: 1,
      urls: [server.url],
      schema: SCHEMA,
      configure: smallStreams(storeDir, (c) => (c.replicate = false)),
    });
    try {
      writeRows(a.dbPath, 1, 150, 'a');
      await waitFor('streams that discarded their first messages', async () =>
        (await streamRanges(server.url, a.config)).every((r) => r.firstSeq > 1),
      );
      assert.ok(!existsSync(storeDir) || readdirSync(storeDir).length === 0, 'no snapshot stored');

      const c = openingNode(dir, 3, server.url, smallStreams(storeDir));
      try {
        await assert.rejects(c.opened, (err: unknown) => {
          assert.ok(err instanceof SnapshotError, String(err));
          assert.equal(err.code, 'ERR_SNAPSHOT_MISSING');
          assert.match(
            err.message,
            /no node can provide a snapshot that reaches them: .*node 1: it does not replicate/,
          );
          return true;
        });
        assert.equal(
          c.logs.records.filter(
            (r) => r.msg === 'waiting for a fresh snapshot: no node that answered can provide one',
          ).length,
          3,
        );
      } finally {
        await c.node.close();
      }
    } finally {
      await a.close();
    }
  });
});
