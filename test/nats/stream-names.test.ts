/**
 * Which streams are change streams: a node consumes every `<prefix>-<n>`
 * stream, and nothing else that lives in the same account (KV and object-store
 * buckets, streams of another prefix that begins the same way).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { shardOfStream } from '../../src/nats/naming.ts';
import { listShardStreams } from '../../src/nats/stream-manager.ts';
import { startNatsServer } from '../helpers/nats-server.ts';

describe('change stream names', () => {
  it('parses <prefix>-<n> only', () => {
    assert.equal(shardOfStream('p', 'p-1'), 1);
    assert.equal(shardOfStream('p', 'p-12'), 12);
    for (const other of ['p-0', 'p-01', 'p-x', 'p-1-2', 'p-', 'q-1', 'pp-1', 'p-x-1', 'KV_p-1', 'p-1234567'])
      assert.equal(shardOfStream('p', other), undefined, other);
    assert.equal(shardOfStream('a-b', 'a-b-3'), 3);
  });

  it('lists the change streams of a prefix on a real server, not buckets or other prefixes', async () => {
    await using server = await startNatsServer();
    const nc = await connect({ servers: server.url });
    try {
      const jsm = await jetstreamManager(nc);
      const streams: [string, string][] = [
        ['p-3', 'ps-3'],
        ['p-1', 'ps-1'],
        ['p-x-2', 'pxs-2'],
        ['q-2', 'qs-2'],
      ];
      for (const [name, subject] of streams) await jsm.streams.add({ name, subjects: [subject] });
      await new Kvm(nc).create('p-cluster');
      assert.deepEqual(await listShardStreams(jsm, 'p'), [1, 3]);
      assert.deepEqual(await listShardStreams(jsm, 'p-x'), [2]);
      assert.deepEqual(await listShardStreams(jsm, 'none'), []);
    } finally {
      await nc.close();
    }
  });
});
