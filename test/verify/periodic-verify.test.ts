/**
 * `[verify] interval`: the lowest node id runs verify in the daemon; a row
 * changed behind capture on another node shows in the metric of differing
 * keys, degrades health and is named in the status, until it is repaired.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type Database from 'better-sqlite3';
import { Writable } from 'node:stream';
import { runStatus } from '../../src/cli/run-status.ts';
import { triggerName } from '../../src/cdc/names.ts';
import { createLogger } from '../../src/logger.ts';
import {
  appConnection,
  LogCapture,
  startNode,
  waitConverged,
  type TestNode,
} from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll } from '../replication/converge-helpers.ts';

const dir = tempDir('hl-periodic-verify-');
let nats: TestNatsServer;
const nodes: TestNode[] = [];
let app2: Database.Database;

before(async () => {
  nats = await startNatsServer();
  for (const nodeId of [1, 2])
    nodes.push(
      await startNode({
        dir: dir.path,
        nodeId,
        urls: [nats.url],
        schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);',
        configure: (c) => {
          c.verify.interval = 1000;
        },
      }),
    );
  const app1 = appConnection(nodes[0]!.dbPath);
  app1.exec("INSERT INTO items VALUES (1, 'a'), (2, 'b')");
  app1.close();
  app2 = appConnection(nodes[1]!.dbPath);
  await waitConverged(
    nodes.map((n) => n.dbPath),
    ['items'],
  );
});

after(async () => {
  app2?.close();
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

test('a divergence found by the periodic verify sets the metric and degrades health', async () => {
  await waitFor('a clean periodic verify', () => nodes[0]!.node.status().lastVerify?.diverged === 0);
  const name = triggerName('items', 'update');
  const sql = app2.prepare('SELECT sql FROM sqlite_schema WHERE name = ?').pluck().get(name) as string;
  app2
    .transaction(() => {
      app2.exec(`DROP TRIGGER "${name}"`);
      app2.exec("UPDATE items SET v = 'behind capture' WHERE id = 2");
      app2.exec(sql);
    })
    .immediate();
  await waitFor('the divergence reported', () => nodes[0]!.node.status().verifyProblem, {
    timeoutMs: 30_000,
  });
  const metrics = await nodes[0]!.node.metrics.registry.metrics();
  assert.match(metrics, /harmonylite_verify_differing_keys 1\b/);
  const health = nodes[0]!.node.observability!.health.evaluate();
  assert.equal(health.status, 'degraded');
  assert.match(JSON.stringify(health), /verify found 1 key/);
  // The node that does not have the lowest id does not run it.
  assert.equal(nodes[1]!.node.status().lastVerify, undefined);
  // -status shows the last result (the status bucket is written every 5 s).
  const logger = createLogger({ verbose: false, format: 'json', destination: new LogCapture() });
  await waitFor(
    '-status showing the last verify',
    async () => {
      let text = '';
      const out = new Writable({
        write(chunk: Buffer, _e, cb) {
          text += chunk.toString('utf8');
          cb();
        },
      });
      await runStatus(nodes[1]!.config, logger, out);
      return /Last verify \(by node 1, \d+s ago\): 1 key\(s\) differ/.test(text);
    },
    { timeoutMs: 20_000, intervalMs: 1000 },
  );
});
