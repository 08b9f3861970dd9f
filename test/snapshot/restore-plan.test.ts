import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { restoreCandidates, shardsBehind, unusableReason } from '../../src/snapshot/restore-plan.ts';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';
import {
  dataObjectName,
  snapshotBaseName,
  type SnapshotManifest,
} from '../../src/snapshot/snapshot-manifest.ts';

function snap(
  createdAt: number,
  positions: Record<string, number>,
  over: Partial<SnapshotManifest> = {},
): SnapshotManifest {
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
    ...over,
  };
}

const streams = [
  { shard: 1, firstSeq: 51, lastSeq: 100 },
  { shard: 2, firstSeq: 1, lastSeq: 30 },
];
const expected = { streamPrefix: 'p', storeDescription: 'local directory /x' };

describe('restore plan', () => {
  it('a shard is behind when its stream discarded messages after the position', () => {
    assert.deepEqual(
      shardsBehind(
        streams,
        new Map([
          [1, 50],
          [2, 0],
        ]),
      ),
      [],
    );
    assert.deepEqual(shardsBehind(streams, new Map([[1, 49]])), [{ shard: 1, position: 49, firstSeq: 51 }]);
    // a new node (no positions) with a stream that discarded history
    assert.deepEqual(shardsBehind(streams, new Map()), [{ shard: 1, position: 0, firstSeq: 51 }]);
    // an empty stream that discarded everything: first_seq = last_seq + 1
    assert.deepEqual(shardsBehind([{ shard: 1, firstSeq: 11, lastSeq: 10 }], new Map([[1, 10]])), []);
    assert.equal(shardsBehind([{ shard: 1, firstSeq: 11, lastSeq: 10 }], new Map([[1, 9]])).length, 1);
  });

  it('picks the newest snapshot that reaches every first kept message', () => {
    const behind = shardsBehind(streams, new Map());
    const tooOld = snap(3, { '1': 49, '2': 5 });
    const good = snap(2, { '1': 50, '2': 30 });
    const older = snap(1, { '1': 60, '2': 10 });
    assert.deepEqual(
      restoreCandidates(behind, streams, [tooOld, good, older], expected).map((m) => m.createdAt),
      [2, 1],
    );
    assert.match(unusableReason(tooOld, streams, expected)!, /shard 1 is at 49, but the stream starts at 51/);
    assert.match(
      unusableReason(snap(4, { '1': 101 }), streams, expected)!,
      /beyond the stream's last message 100/,
    );
    // Another shard count serves (a rolling change of it) when its positions reach every stream.
    assert.equal(unusableReason(snap(4, { '1': 60 }, { shards: 3 }), streams, expected), undefined);
    assert.equal(unusableReason(snap(4, { '1': 60, '2': 5 }, { shards: 1 }), streams, expected), undefined);
    // A stream the snapshot's node never consumed reaches only while that stream kept its first message.
    assert.match(
      unusableReason(snap(4, { '1': 60 }), [...streams, { shard: 3, firstSeq: 2, lastSeq: 9 }], expected)!,
      /shard 3 is at 0, but the stream starts at 2/,
    );
    assert.match(
      unusableReason(snap(4, { '1': 60 }, { streamPrefix: 'q' }), streams, expected)!,
      /made for streams q-\*/,
    );
  });

  it('a snapshot too old for the streams is an error that says so, as is no snapshot at all', () => {
    const behind = shardsBehind(streams, new Map([[1, 10]]));
    assert.throws(
      () => restoreCandidates(behind, streams, [snap(3, { '1': 20 })], expected),
      (err) => {
        assert.ok(err instanceof SnapshotError);
        assert.equal(err.code, 'ERR_SNAPSHOT_TOO_OLD');
        assert.match(err.message, /shard 1 at 10, stream starts at 51/);
        assert.match(err.message, /the newest, snapshot-0000000000003-1, shard 1 is at 20/);
        assert.match(err.hint ?? '', /-save-snapshot/);
        return true;
      },
    );
    assert.throws(
      () => restoreCandidates(behind, streams, [], expected),
      (err) => {
        assert.ok(err instanceof SnapshotError);
        assert.equal(err.code, 'ERR_SNAPSHOT_MISSING');
        assert.match(err.message, /local directory \/x holds no snapshot/);
        return true;
      },
    );
  });
});
