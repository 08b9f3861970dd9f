import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { silentLogger } from '../../src/logger.ts';
import { SnapshotLeader } from '../../src/snapshot/snapshot-leader.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { waitFor } from '../helpers/wait-for.ts';

const TTL_MS = 1500;
let server: TestNatsServer;
let n = 0;

before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await server?.close();
});

interface Contender {
  readonly leader: SnapshotLeader;
  readonly nc: NatsConnection;
}

async function contenders(count: number, bucket: string): Promise<Contender[]> {
  return Promise.all(
    Array.from({ length: count }, async (_, i) => {
      const nc = await connect({ servers: server.url });
      const leader = new SnapshotLeader({ nc, bucket, nodeId: i + 1, ttlMs: TTL_MS, logger: silentLogger() });
      await leader.open();
      return { leader, nc };
    }),
  );
}

/** Samples who leads every 10 ms; fails the test if two ever lead at once. */
function watchOverlap(cs: readonly Contender[]): { stop(): void; leaders(): number[] } {
  const seen: number[] = [];
  const timer = setInterval(() => {
    const now = cs.flatMap((c, i) => (c.leader.isLeader ? [i] : []));
    assert.ok(now.length <= 1, `two leaders at once: ${now.join(', ')}`);
    if (now.length === 1 && seen.at(-1) !== now[0]) seen.push(now[0]!);
  }, 10);
  return { stop: () => clearInterval(timer), leaders: () => seen };
}

describe('SnapshotLeader', () => {
  it('elects one leader; a closed leader is replaced at once', async () => {
    const cs = await contenders(3, `lease-a-${process.pid}-${++n}`);
    const watch = watchOverlap(cs);
    try {
      const first = await waitFor('a leader', () => cs.findIndex((c) => c.leader.isLeader) + 1 || undefined);
      await new Promise((r) => setTimeout(r, TTL_MS * 2)); // renewals keep the same leader
      assert.equal(cs.filter((c) => c.leader.isLeader).length, 1);
      assert.ok(cs[first - 1]!.leader.isLeader, 'the first leader kept the lease');
      const closedAt = performance.now();
      await cs[first - 1]!.leader.close();
      const next = await waitFor(
        'another leader',
        () => cs.findIndex((c) => c.leader.isLeader) + 1 || undefined,
        {
          timeoutMs: TTL_MS * 2,
        },
      );
      assert.notEqual(next, first);
      assert.ok(performance.now() - closedAt < TTL_MS, 'released lease taken within the TTL');
    } finally {
      watch.stop();
      for (const c of cs) await c.leader.close();
      for (const c of cs) await c.nc.close();
    }
  });

  it('a leader that dies without releasing is replaced after its lease expires, never overlapping', async () => {
    const cs = await contenders(3, `lease-b-${process.pid}-${++n}`);
    const watch = watchOverlap(cs);
    try {
      const first = await waitFor('a leader', () => cs.findIndex((c) => c.leader.isLeader) + 1 || undefined);
      const dead = cs[first - 1]!;
      const diedAt = performance.now();
      await dead.nc.close(); // its renewals fail from now on; the key is left to expire
      await waitFor('the dead leader to step down', () => !dead.leader.isLeader, { timeoutMs: TTL_MS * 2 });
      const next = await waitFor(
        'another leader',
        () => cs.findIndex((c, i) => i !== first - 1 && c.leader.isLeader) + 1 || undefined,
        { timeoutMs: TTL_MS * 4 },
      );
      const tookMs = performance.now() - diedAt;
      assert.notEqual(next, first);
      assert.ok(tookMs < TTL_MS * 2 + 1000, `took over after ${Math.round(tookMs)} ms`);
    } finally {
      watch.stop();
      for (const c of cs) await c.leader.close();
      for (const c of cs) await c.nc.close().catch(() => undefined);
    }
  });
});
