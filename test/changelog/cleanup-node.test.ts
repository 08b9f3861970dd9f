/**
 * A running node deletes its published change-log rows once they are older
 * than `cleanup_interval`, across several cleanup steps (more rows than one
 * step's span), and keeps what is not published: a refused row (state 2) stays.
 * Real nats-server, one node publishing.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { changeLogTable, quoteIdent as q } from '../../src/cdc/names.ts';
import { appConnection, startNode } from '../helpers/node-harness.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { query } from '../replication/converge-helpers.ts';

test('a node deletes published change-log rows past cleanup_interval, in steps, and keeps refused ones', async () => {
  using dir = tempDir();
  await using nats = await startNatsServer();
  const n = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [nats.url],
    schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);',
    configure: (c) => {
      c.cleanup_interval = 300;
      c.replicate = false;
      c.replication_log.max_batch_bytes = 4096; // a 10 KB row is refused (state 2)
      c.replication_log.compress = false;
    },
  });
  try {
    const app = appConnection(n.dbPath);
    const insert = app.prepare('INSERT INTO items (id, v) VALUES (?, ?)');
    app.transaction(() => {
      for (let i = 1; i <= 2500; i++) insert.run(i, `row ${i}`);
      insert.run(2501, 'y'.repeat(10_000));
    })();
    app.close();
    const states = () =>
      query<[bigint, bigint]>(
        n.dbPath,
        `SELECT state, count(*) FROM ${q(changeLogTable('items'))} GROUP BY state`,
      ).map(([state, rows]) => `${state}: ${rows}`);
    await waitFor('the published rows cleaned up', () => states().join() === '2: 1', {
      timeoutMs: 15_000,
      seen: () => states(),
    });
    // The pass logs its total when it ends, just after its last delete is visible.
    const cleaned = () =>
      n.logs.records
        .filter((r) => r.msg === 'Cleaned up DB change logs')
        .reduce((sum, r) => sum + Number(r.rows), 0);
    await waitFor('the log lines count every deleted row (2500)', () => cleaned() === 2500, {
      seen: cleaned,
    });
    assert.equal(query(n.dbPath, 'SELECT count(*) FROM items')[0]![0], 2501n, 'application rows untouched');
  } finally {
    await n.close();
  }
});
