import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/logger.ts';
import {
  dataObjectName,
  snapshotBaseName,
  type SnapshotManifest,
} from '../../src/snapshot/snapshot-manifest.ts';
import { SnapshotScheduler } from '../../src/snapshot/snapshot-scheduler.ts';
import { waitFor } from '../helpers/wait-for.ts';

function manifestAt(positions: Record<string, number>, createdAt = Date.now()): SnapshotManifest {
  const name = snapshotBaseName(createdAt, 1);
  return {
    format: 2,
    name,
    nodeId: 1,
    createdAt,
    streamPrefix: 'p',
    shards: 2,
    positions,
    originSeqs: [],
    schemaSql: '',
    sizeBytes: 1,
    checksum: `xxh64:${'0'.repeat(16)}`,
    compressed: false,
    dataObject: dataObjectName(name, false),
    dataBytes: 1,
  };
}

describe('SnapshotScheduler', () => {
  it('snapshots on the leader when a shard advanced by the threshold since the newest stored snapshot', async () => {
    let leader = false;
    const positions = new Map([
      [1, 100],
      [2, 40],
    ]);
    const saves: Record<string, number>[] = [];
    const scheduler = new SnapshotScheduler({
      isLeader: () => leader,
      latest: async () => manifestAt({ '1': 100, '2': 40 }),
      save: async () => {
        const p = Object.fromEntries([...positions].map(([s, v]) => [String(s), v]));
        saves.push(p);
        return manifestAt(p);
      },
      positions: () => positions,
      thresholdMessages: 25,
      intervalMs: 0,
      checkIntervalMs: 10,
      logger: silentLogger(),
    });
    scheduler.open();
    try {
      positions.set(2, 90); // advanced 50, but not leader: nothing
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(saves.length, 0);
      leader = true;
      await waitFor('a snapshot', () => saves.length === 1);
      assert.deepEqual(saves[0], { '1': 100, '2': 90 });
      positions.set(1, 124); // 24 < 25: not yet
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(saves.length, 1);
      positions.set(1, 125);
      await waitFor('a second snapshot', () => saves.length === 2);
    } finally {
      await scheduler.close();
    }
  });

  it('takes a requested snapshot at once, and serves a request made during a save with that save', async () => {
    const saves: string[] = [];
    let release: (() => void) | undefined;
    const scheduler = new SnapshotScheduler({
      isLeader: () => true,
      latest: async () => manifestAt({ '1': 100, '2': 40 }),
      save: async () => {
        saves.push('save');
        if (saves.length === 2) await new Promise<void>((r) => (release = r));
        return manifestAt({ '1': 100, '2': 40 });
      },
      positions: () =>
        new Map([
          [1, 100],
          [2, 40],
        ]),
      thresholdMessages: 25,
      intervalMs: 0,
      checkIntervalMs: 10,
      logger: silentLogger(),
    });
    scheduler.open();
    try {
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(saves.length, 0, 'nothing is due');
      scheduler.requestSnapshot('node 3 asked');
      await waitFor('the requested snapshot', () => saves.length === 1);
      scheduler.requestSnapshot('node 3 asked again');
      await waitFor('a second save, held', () => release !== undefined);
      scheduler.requestSnapshot('node 4 asked during the save');
      release!();
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(saves.length, 2, 'the request made during a save was served by it');
    } finally {
      await scheduler.close();
    }
  });

  it('snapshots every interval, and backs off after a failure', async () => {
    let calls = 0;
    let fail = true;
    const scheduler = new SnapshotScheduler({
      isLeader: () => true,
      latest: async () => manifestAt({}, Date.now() - 10_000),
      save: async () => {
        calls++;
        if (fail) throw new Error('store down');
        return manifestAt({});
      },
      positions: () => new Map(),
      thresholdMessages: 25,
      intervalMs: 5000,
      checkIntervalMs: 10,
      logger: silentLogger(),
    });
    scheduler.open();
    try {
      await waitFor('a first attempt', () => calls === 1);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(calls, 1, 'no retry within the 5 s backoff');
      fail = false;
    } finally {
      await scheduler.close();
    }
  });
});
