import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';
import {
  dataObjectName,
  decodeManifest,
  encodeManifest,
  manifestObjectName,
  manifestPosition,
  MANIFEST_FORMAT,
  parseSnapshotObjectName,
  snapshotBaseName,
  type SnapshotManifest,
} from '../../src/snapshot/snapshot-manifest.ts';

function manifest(overrides: Partial<SnapshotManifest> = {}): SnapshotManifest {
  const name = snapshotBaseName(1_700_000_000_123, 7);
  return {
    format: MANIFEST_FORMAT,
    name,
    nodeId: 7,
    createdAt: 1_700_000_000_123,
    streamPrefix: 'harmonylite-changes',
    shards: 2,
    positions: { '1': 40, '2': 0 },
    originSeqs: [{ origin: 7, shard: 1, seq: 12 }],
    schemaSql: 'CREATE TABLE t (id INTEGER PRIMARY KEY)',
    sizeBytes: 8192,
    checksum: `xxh64:${'a'.repeat(16)}`,
    compressed: true,
    dataObject: dataObjectName(name, true),
    dataBytes: 1000,
    ...overrides,
  };
}

function rejects(m: unknown, pattern: RegExp, objectName = manifestObjectName(manifest().name)): void {
  assert.throws(
    () => decodeManifest(new TextEncoder().encode(JSON.stringify(m)), objectName),
    (err) => {
      assert.ok(err instanceof SnapshotError);
      assert.equal(err.code, 'ERR_SNAPSHOT_MANIFEST');
      assert.match(err.message, pattern);
      assert.ok(err.message.startsWith(`manifest ${objectName}: `), err.message);
      return true;
    },
  );
}

describe('snapshot manifest', () => {
  it('round-trips through JSON', () => {
    const m = manifest();
    assert.deepEqual(decodeManifest(encodeManifest(m), 'snapshot-1700000000123-7.json'), m);
    assert.equal(manifestPosition(m, 1), 40);
    assert.equal(manifestPosition(m, 3), 0);
    // Positions of streams beyond its own shards: its node consumed streams other nodes published to.
    const wider = manifest({ shards: 1, positions: { '1': 40, '2': 3, '4': 9 } });
    assert.deepEqual(decodeManifest(encodeManifest(wider), 'snapshot-1700000000123-7.json'), wider);
  });

  it('reads format 1 manifests, whose checksum is SHA-256', () => {
    const { checksum: _, ...rest } = manifest();
    const old = { ...rest, format: 1, sha256: 'b'.repeat(64) };
    const decoded = decodeManifest(
      new TextEncoder().encode(JSON.stringify(old)),
      manifestObjectName(old.name),
    );
    assert.equal(decoded.checksum, `sha256:${'b'.repeat(64)}`);
  });

  it('names objects so that they sort by time and say what they are', () => {
    assert.equal(snapshotBaseName(5, 3), 'snapshot-0000000000005-3');
    assert.deepEqual(parseSnapshotObjectName('snapshot-1700000000123-7.db.zst'), {
      baseName: 'snapshot-1700000000123-7',
      createdAt: 1_700_000_000_123,
      nodeId: 7,
      kind: 'data',
    });
    assert.equal(parseSnapshotObjectName('snapshot-1700000000123-7.json')?.kind, 'manifest');
    assert.equal(parseSnapshotObjectName('other.json'), undefined);
    assert.equal(parseSnapshotObjectName('.snapshot-1700000000123-7.db.abc.partial'), undefined);
  });

  it('rejects damaged or foreign manifests with the field at fault', () => {
    rejects({ ...manifest(), format: 3 }, /format 3 is not supported/);
    rejects({ ...manifest(), positions: { '1': -1 } }, /positions\[1\] must be an integer >= 0/);
    rejects({ ...manifest(), positions: { '0': 5 } }, /positions has shard "0"/);
    rejects({ ...manifest(), positions: { x: 5 } }, /positions has shard "x"/);
    rejects({ ...manifest(), checksum: 'xyz' }, /checksum must be xxh64/);
    rejects({ ...manifest(), format: 1, sha256: 'xyz' }, /sha256 must be 64 lowercase hex digits/);
    rejects({ ...manifest(), dataObject: 'other.db' }, /dataObject "other.db" should be/);
    rejects({ ...manifest(), sizeBytes: '12' }, /sizeBytes must be an integer/);
    rejects({ ...manifest(), originSeqs: [{ origin: 1 }] }, /originSeqs\[0\] must be/);
    rejects({ ...manifest(), nodeId: 8 }, /does not match createdAt and nodeId/);
    rejects(
      manifest(),
      /should be stored as snapshot-1700000000123-7\.json/,
      'snapshot-1700000000124-7.json',
    );
    assert.throws(
      () => decodeManifest(new TextEncoder().encode('{"format": 1,'), 'snapshot-1700000000123-7.json'),
      /not valid JSON/,
    );
  });
});
