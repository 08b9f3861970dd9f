/**
 * Batches respect `max_batch_bytes`: a transaction larger than one message is
 * split, in order, into messages that each fit; a single change too large for
 * any message is refused (state 2, logged) and the changes after it still go.
 * Real nats-server, two nodes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { changeLogTable, quoteIdent as q } from '../../src/cdc/names.ts';
import { streamName } from '../../src/nats/naming.ts';
import { appConnection, nodeConfig, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import type { Config } from '../../src/config/config.ts';
import { closeAll, query, startTwoNodes } from './converge-helpers.ts';

/** A nats-server and nodes 1 and 2 on an `items` table, configured by `configure`; all stopped after `body`. */
async function withTwoNodes(
  configure: (c: Config) => void,
  body: (a: TestNode, b: TestNode, natsUrl: string, dir: string) => Promise<void>,
): Promise<void> {
  using dir = tempDir();
  const nats = await startNatsServer();
  const nodes: TestNode[] = [];
  try {
    const [a, b] = await startTwoNodes(nodes, {
      dir: dir.path,
      urls: [nats.url],
      schema: 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);',
      configure,
    });
    await body(a, b, nats.url, dir.path);
  } finally {
    await closeAll(nodes, () => nats.close());
  }
}

const LIMIT = 4096;

test('a transaction larger than max_batch_bytes goes out as several messages that fit; an oversized row is refused alone', () =>
  withTwoNodes(
    (c) => {
      c.replication_log.max_batch_bytes = LIMIT;
      c.replication_log.compress = false; // message size = CBOR size
    },
    async (a, b, natsUrl, dir) => {
      const app = appConnection(a.dbPath);
      const insert = app.prepare('INSERT INTO items (id, v) VALUES (?, ?)');
      app.transaction(() => {
        for (let i = 1; i <= 30; i++) insert.run(i, `row ${i} `.padEnd(400, 'x'));
        insert.run(31, 'y'.repeat(10_000)); // alone larger than any message
        for (let i = 32; i <= 40; i++) insert.run(i, `row ${i} `.padEnd(400, 'x'));
      })();
      app.close();
      const count = (path: string) => query(path, 'SELECT count(*) FROM items')[0]![0];
      await waitFor('node 2 has the 39 publishable rows', () => count(b.dbPath) === 39n);
      assert.deepEqual(
        query(b.dbPath, 'SELECT id FROM items WHERE id = 31'),
        [],
        'the oversized row never left node 1',
      );
      assert.deepEqual(
        query(a.dbPath, `SELECT state FROM ${q(changeLogTable('items'))} WHERE val_id = 31`),
        [[2n]],
        'kept in the change log with state 2',
      );
      assert.ok(
        a.logs.records.some((r) =>
          String(r.msg).startsWith('Unable to publish: change is larger than the largest NATS message'),
        ),
      );

      const nc = await connect({ servers: natsUrl });
      try {
        const jsm = await jetstreamManager(nc);
        const stream = streamName(nodeConfig({ dir, nodeId: 1, urls: [natsUrl] }).nats.stream_prefix, 1);
        const info = await jsm.streams.info(stream);
        const sizes: number[] = [];
        for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++)
          sizes.push((await jsm.streams.getMessage(stream, { seq }))!.data.length);
        assert.ok(sizes.length >= Math.ceil((39 * 420) / LIMIT), `${sizes.length} messages for ~16 KB`);
        for (const size of sizes) assert.ok(size <= LIMIT, `a message of ${size} bytes, limit ${LIMIT}`);
      } finally {
        await nc.close();
      }
    },
  ));

test('refused rows make room: scanning, paused with only refused rows waiting, goes on', () =>
  withTwoNodes(
    (c) => {
      c.replication_log.max_batch_bytes = LIMIT;
      // Scanning pauses at 3 waiting changes (3 full batches of 1), checked after each scan of 5.
      c.replication_log.max_batch_changes = 1;
      c.scan_max_changes = 5;
      c.replication_log.compress = false;
    },
    async (a, b) => {
      const app = appConnection(a.dbPath);
      const insert = app.prepare('INSERT INTO items (id, v) VALUES (?, ?)');
      const refused = () =>
        query(a.dbPath, `SELECT count(*) FROM ${q(changeLogTable('items'))} WHERE state = 2`)[0]![0];
      // Each scan queues 5 (past the pause); only their refusal makes room for the next scan.
      app.transaction(() => {
        for (let i = 1; i <= 20; i++) insert.run(i, 'y'.repeat(10_000));
      })();
      await waitFor('the 20 oversized rows kept with state 2', () => refused() === 20n);
      // Written after: the scan must have resumed to see them.
      for (let i = 21; i <= 23; i++) insert.run(i, `row ${i}`);
      app.close();
      await waitFor(
        'node 2 has rows 21-23',
        () => query(b.dbPath, 'SELECT count(*) FROM items')[0]![0] === 3n,
      );
    },
  ));
