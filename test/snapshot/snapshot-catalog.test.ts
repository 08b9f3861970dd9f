import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { listSnapshots, pruneSnapshots, uploadSnapshot } from '../../src/snapshot/snapshot-catalog.ts';
import {
  dataObjectName,
  encodeManifest,
  manifestObjectName,
  snapshotBaseName,
  type SnapshotManifest,
} from '../../src/snapshot/snapshot-manifest.ts';
import type { SnapshotStore } from '../../src/snapshot/snapshot-store.ts';
import { LocalSnapshotStore } from '../../src/snapshot/stores/local-store.ts';
import { tempDir } from '../helpers/temp-dir.ts';

const root = tempDir('hl-catalog-');
after(() => root.remove());
let n = 0;

function manifestFor(createdAt: number, dataBytes: number): SnapshotManifest {
  const name = snapshotBaseName(createdAt, 3);
  return {
    format: 2,
    name,
    nodeId: 3,
    createdAt,
    streamPrefix: 'p',
    shards: 1,
    positions: { '1': createdAt },
    originSeqs: [],
    schemaSql: '',
    sizeBytes: dataBytes,
    checksum: `xxh64:${'0'.repeat(16)}`,
    compressed: false,
    dataObject: dataObjectName(name, false),
    dataBytes,
  };
}

/** Delegates to `store`, recording the names written and deleted, in order. */
function recording(store: SnapshotStore, log: string[]): SnapshotStore {
  return {
    description: store.description,
    open: (s) => store.open(s),
    putFile: async (name, path, o) => {
      log.push(`put ${name}`);
      await store.putFile(name, path, o);
    },
    getFile: (name, path, o) => store.getFile(name, path, o),
    putBytes: async (name, data, s) => {
      log.push(`put ${name}`);
      await store.putBytes(name, data, s);
    },
    getBytes: (name, s) => store.getBytes(name, s),
    list: (s) => store.list(s),
    delete: async (name, s) => {
      log.push(`delete ${name}`);
      await store.delete(name, s);
    },
    close: () => store.close(),
  };
}

async function freshStore(): Promise<{ store: SnapshotStore; file: string }> {
  const dir = join(root.path, `store-${++n}`);
  const store = new LocalSnapshotStore({ path: dir });
  await store.open();
  const file = join(root.path, `data-${n}.bin`);
  writeFileSync(file, Buffer.alloc(100, 1));
  return { store, file };
}

describe('snapshot catalog', () => {
  it('uploads the data before the manifest', async () => {
    const { store, file } = await freshStore();
    const order: string[] = [];
    const m = manifestFor(1000, 100);
    await uploadSnapshot(recording(store, order), { manifest: m, uploadPath: file });
    assert.deepEqual(order, [`put ${m.dataObject}`, `put ${manifestObjectName(m.name)}`]);
    assert.deepEqual(
      (await listSnapshots(store)).map((x) => x.name),
      [m.name],
    );
  });

  it('lists restorable snapshots newest first and skips broken ones with the reason', async () => {
    const { store, file } = await freshStore();
    for (const t of [1000, 3000, 2000])
      await uploadSnapshot(store, { manifest: manifestFor(t, 100), uploadPath: file });
    // A manifest whose data is gone, one that lies about the size, and one that is not JSON.
    const missing = manifestFor(4000, 100);
    await store.putBytes(manifestObjectName(missing.name), encodeManifest(missing));
    const wrongSize = manifestFor(5000, 99);
    await uploadSnapshot(store, { manifest: wrongSize, uploadPath: file });
    await store.putBytes(manifestObjectName(snapshotBaseName(6000, 3)), new TextEncoder().encode('{'));
    const skipped: string[] = [];
    const listed = await listSnapshots(store, {
      onSkipped: (name, reason) => skipped.push(`${name}: ${reason}`),
    });
    assert.deepEqual(
      listed.map((m) => m.createdAt),
      [3000, 2000, 1000],
    );
    assert.equal(skipped.length, 3);
    assert.match(skipped.join('\n'), /snapshot-0000000004000-3\.db is missing/);
    assert.match(skipped.join('\n'), /has 100 bytes, the manifest says 99/);
    assert.match(skipped.join('\n'), /not valid JSON/);
  });

  it('keeps the newest N, deletes manifests before data, and removes data of crashed uploads', async () => {
    const { store, file } = await freshStore();
    for (const t of [1000, 2000, 3000, 4000])
      await uploadSnapshot(store, { manifest: manifestFor(t, 100), uploadPath: file });
    // A crashed upload older than the newest manifest, and one newer (maybe still uploading).
    await store.putFile(dataObjectName(snapshotBaseName(2500, 9), false), file);
    await store.putFile(dataObjectName(snapshotBaseName(9000, 9), false), file);
    const deletes: string[] = [];
    await pruneSnapshots(recording(store, deletes), 2, { orphanGraceMs: 0 });
    assert.deepEqual(deletes, [
      'delete snapshot-0000000002000-3.json',
      'delete snapshot-0000000001000-3.json',
      'delete snapshot-0000000002000-3.db',
      'delete snapshot-0000000001000-3.db',
      'delete snapshot-0000000002500-9.db',
    ]);
    assert.deepEqual(
      (await store.list()).map((o) => o.name),
      [
        'snapshot-0000000003000-3.db',
        'snapshot-0000000003000-3.json',
        'snapshot-0000000004000-3.db',
        'snapshot-0000000004000-3.json',
        'snapshot-0000000009000-9.db',
      ],
    );
  });
});
