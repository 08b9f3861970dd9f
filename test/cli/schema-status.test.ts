/**
 * `-schema-status` and `-schema-status-cluster` (HarmonyLite main's flags): the
 * schema hash a node logs at start ("Computed schema hash") is the one the
 * command computes from its file, and every node's reported hash is grouped,
 * exit 1 while they differ.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { connect } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { readNodeStatuses } from '../../src/node/node-status-reporter.ts';
import { statusBucket } from '../../src/nats/naming.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import { spawnCli, startNode, writeConfigFile, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';

async function run(args: string[]): Promise<{ code: number | null; text: string }> {
  const cli = spawnCli(args);
  const code = await cli.exited;
  return { code, text: cli.output.join('\n') };
}

test('-schema-status prints the hash the node logged; -schema-status-cluster groups every node', async () => {
  using dir = tempDir();
  await using server = await startNatsServer();
  const nodes: TestNode[] = [];
  const nc = await connect({ servers: server.url });
  try {
    for (const nodeId of [1, 2]) {
      nodes.push(
        await startNode({
          dir: dir.path,
          nodeId,
          urls: [server.url],
          schema: 'CREATE TABLE books (id INTEGER PRIMARY KEY, title TEXT NOT NULL, year INTEGER)',
          configure: (c) => (c.snapshot.enabled = false),
        }),
      );
    }
    const [one, two] = nodes as [TestNode, TestNode];
    const configs = nodes.map((n) =>
      writeConfigFile(n.config, join(dir.path, `node-${n.config.node_id}.toml`)),
    );
    const logged = one.logs.records.find((r) => r.msg === 'Computed schema hash');
    assert.match(String(logged?.schema_hash), /^[0-9a-f]{16}\.\.\.$/);

    const local = await run(['-config', configs[0]!, '-schema-status']);
    assert.equal(local.code, 0, local.text);
    const hash = /^Schema Hash: ([0-9a-f]{64})$/m.exec(local.text)?.[1];
    assert.ok(hash !== undefined, local.text);
    assert.equal(`${hash.slice(0, 16)}...`, logged?.schema_hash);
    assert.match(local.text, /^Node ID: 1$/m);
    assert.match(local.text, /^Watched Tables:\n {2}- books$/m);

    /** Waits until the status bucket holds each node's current hash. */
    const reported = () =>
      waitFor(
        'every node to report its current schema hash',
        async () => {
          const records = (await readNodeStatuses(nc, statusBucket(one.config.nats.stream_prefix))) ?? [];
          return nodes.every((n) =>
            records.some((r) => r.node_id === n.node.nodeId && r.schema_hash === n.node.status().schemaHash),
          );
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      );
    await reported();
    assert.ok(
      one.logs.records.some(
        (r) =>
          r.msg === 'Published schema state to cluster registry' && r.schema_hash === logged?.schema_hash,
      ),
      'the line HarmonyLite scripts wait for',
    );
    const same = await run(['-config', configs[1]!, '-schema-status-cluster']);
    assert.equal(same.code, 0, same.text);
    assert.match(same.text, /^Total Nodes: 2$/m);
    assert.match(same.text, /^Consistent: Yes$/m);
    assert.match(same.text, new RegExp(`^ {2}${hash.slice(0, 16)}: Node 1, Node 2$`, 'm'));

    // A migration on node 1 only.
    const db = new Database(one.dbPath);
    db.exec('ALTER TABLE books ADD COLUMN email TEXT');
    db.close();
    await waitFor('node 1 to log a new schema hash', () =>
      one.logs.records.some((r) => r.msg === 'Computed schema hash' && r.schema_hash !== logged?.schema_hash),
    );
    assert.notEqual(one.node.status().schemaHash, two.node.status().schemaHash);
    await reported();
    const differ = await run(['-config', configs[1]!, '-schema-status-cluster']);
    assert.equal(differ.code, 1, differ.text);
    assert.match(differ.text, /^Consistent: No$/m);
    assert.match(differ.text, new RegExp(`^ {4}Schema Hash: ${one.node.status().schemaHash}$`, 'm'));
  } finally {
    await nc.close();
    for (const n of nodes) await n.close();
  }
});
