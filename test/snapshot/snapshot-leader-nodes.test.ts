import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { startNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { SCHEMA, smallStreams } from './snapshot-test-kit.ts';

const root = tempDir('hl-leader-nodes-');
after(() => root.remove());

/** Whether a node currently holds the lease, from its own log lines. */
function leads(node: TestNode): boolean {
  const events = node.logs.records.filter(
    (r) => r.msg === 'became snapshot leader' || r.msg === 'lost snapshot leadership',
  );
  return events.at(-1)?.msg === 'became snapshot leader';
}

describe('snapshot leader election between nodes', () => {
  it('one leader among three nodes; when it stops, another takes over within the lease TTL', async () => {
    const dir = join(root.path, 'three');
    mkdirSync(dir);
    await using server = await startNatsServer();
    const configure = smallStreams(join(dir, 'snapshots'));
    const nodes = await Promise.all(
      [1, 2, 3].map((nodeId) => startNode({ dir, nodeId, urls: [server.url], schema: SCHEMA, configure })),
    );
    try {
      const leader = await waitFor('a snapshot leader', () => nodes.find(leads), { timeoutMs: 20_000 });
      // Renewals keep one leader: watch for a few lease periods.
      const deadline = Date.now() + 6000;
      while (Date.now() < deadline) {
        assert.equal(nodes.filter(leads).length, 1, 'exactly one leader');
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(leads(leader));
      const stoppedAt = Date.now();
      await leader.close();
      const others = nodes.filter((x) => x !== leader);
      const next = await waitFor('another snapshot leader', () => others.find(leads), { timeoutMs: 15_000 });
      assert.ok(Date.now() - stoppedAt < 15_000, 'within the 15 s lease TTL');
      assert.equal(others.filter(leads).length, 1);
      assert.notEqual(next, leader);
    } finally {
      await Promise.all(nodes.map((x) => x.close()));
    }
  });
});
