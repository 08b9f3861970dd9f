import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { NatsObjectSnapshotStore } from '../../../src/snapshot/stores/nats-object-store.ts';
import { startNatsServer, type TestNatsServer } from '../../helpers/nats-server.ts';
import { tempDir } from '../../helpers/temp-dir.ts';
import { assertStoreError, runSnapshotStoreConformance, sha256File, writeRandomFile } from './conformance.ts';

let server: TestNatsServer;
let nc: NatsConnection;
let n = 0;

before(async () => {
  server = await startNatsServer();
  nc = await connect({ servers: server.url });
});
after(async () => {
  await nc?.close();
  await server?.close();
});

async function destroyBucket(bucket: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  await jsm.streams.delete(`OBJ_${bucket}`).catch(() => undefined);
}

runSnapshotStoreConformance('nats', async () => {
  const bucket = `conf-${process.pid}-${++n}`;
  return {
    store: new NatsObjectSnapshotStore({ nc, bucket }),
    reopen: () => new NatsObjectSnapshotStore({ nc, bucket }),
    cleanup: () => destroyBucket(bucket),
  };
});

describe('NatsObjectSnapshotStore', () => {
  const files = tempDir('hl-nats-store-');
  after(() => files.remove());

  it('refuses a bucket name the object store cannot hold', () => {
    assert.throws(
      () => new NatsObjectSnapshotStore({ nc, bucket: 'a.b' }),
      (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_CONFIG');
        return true;
      },
    );
  });

  it('stores objects readable by the plain object-store client (same format)', async () => {
    const bucket = `compat-${process.pid}`;
    const store = new NatsObjectSnapshotStore({ nc, bucket });
    await store.open();
    const src = await writeRandomFile(join(files.path, 'compat.bin'), 3 * 1024 * 1024 + 17);
    await store.putFile('compat.db', src);
    const os = await new Objm(nc).open(bucket);
    const info = await os.info('compat.db');
    assert.equal(info?.size, 3 * 1024 * 1024 + 17);
    const blob = await os.getBlob('compat.db');
    assert.equal(blob?.length, 3 * 1024 * 1024 + 17);
    const out = join(files.path, 'compat.out');
    await store.getFile('compat.db', out);
    assert.equal(await sha256File(out), await sha256File(src));
    await store.close();
    await destroyBucket(bucket);
  });

  it('purges chunks of an upload that never completed, once they are old enough', async () => {
    const bucket = `orphans-${process.pid}`;
    const store = new NatsObjectSnapshotStore({ nc, bucket });
    await store.open();
    await store.putBytes('kept.json', new Uint8Array([1, 2, 3]));
    // What a killed uploader leaves: chunks under an id that no metadata names.
    const js = (await import('@nats-io/jetstream')).jetstream(nc);
    await js.publish(`$O.${bucket}.C.ORPHANNUID123`, new Uint8Array(1000));
    const jsm = await jetstreamManager(nc);
    const count = async () =>
      Object.keys(
        (await jsm.streams.info(`OBJ_${bucket}`, { subjects_filter: `$O.${bucket}.C.>` })).state.subjects ??
          {},
      ).length;
    assert.equal(await count(), 2);
    const young = new NatsObjectSnapshotStore({ nc, bucket });
    await young.open();
    assert.equal(await count(), 2, 'a recent orphan may be a live upload: kept');
    const old = new NatsObjectSnapshotStore({ nc, bucket, orphanChunkAgeMs: 0 });
    await old.open();
    assert.equal(await count(), 1);
    assert.deepEqual(await old.getBytes('kept.json'), new Uint8Array([1, 2, 3]));
    await Promise.all([store.close(), young.close(), old.close()]);
    await destroyBucket(bucket);
  });
});
