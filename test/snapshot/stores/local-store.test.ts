import assert from 'node:assert/strict';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LocalSnapshotStore } from '../../../src/snapshot/stores/local-store.ts';
import { tempDir } from '../../helpers/temp-dir.ts';
import { assertStoreError, runSnapshotStoreConformance } from './conformance.ts';

const root = tempDir('hl-local-store-');
after(() => root.remove());
let n = 0;

runSnapshotStoreConformance('local', async () => {
  const path = join(root.path, `store-${++n}`, 'nested');
  return {
    store: new LocalSnapshotStore({ path }),
    reopen: () => new LocalSnapshotStore({ path }),
    cleanup: async () => {},
  };
});

describe('LocalSnapshotStore', () => {
  it('creates the directory on open, including parents', async () => {
    const path = join(root.path, 'missing', 'a', 'b');
    const store = new LocalSnapshotStore({ path });
    await store.open();
    await store.putBytes('x.db', new Uint8Array([1]));
    assert.deepEqual(await readdir(path), ['x.db']);
    assert.match(store.description, /^local directory .*missing\/a\/b$/);
    await store.close();
  });

  it('does not list leftover temporary files or subdirectories', async () => {
    const path = join(root.path, 'leftovers');
    const store = new LocalSnapshotStore({ path });
    await store.open();
    await writeFile(join(path, '.snap.db.0123456789ab.partial'), 'crashed mid-put');
    await mkdir(join(path, 'subdir'));
    await store.putBytes('snap.db', new Uint8Array([1]));
    assert.deepEqual(
      (await store.list()).map((o) => o.name),
      ['snap.db'],
    );
    await store.close();
  });

  it(
    'names the backend and operation when the directory is not writable',
    { skip: process.getuid?.() === 0 ? 'root ignores permissions' : false },
    async () => {
      const path = join(root.path, 'read-only');
      const store = new LocalSnapshotStore({ path });
      await store.open();
      await chmod(path, 0o500);
      await assert.rejects(store.putBytes('x.db', new Uint8Array([1])), (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_AUTH');
        assert.match(err.message, /^local: put x\.db: permission denied/);
        return true;
      });
      await chmod(path, 0o700);
      await store.close();
    },
  );

  it('a missing destination directory is a store error, not ERR_SNAPSHOT_NOT_FOUND', async () => {
    const store = new LocalSnapshotStore({ path: join(root.path, 'dest') });
    await store.open();
    await store.putBytes('x.db', new Uint8Array(1024));
    await assert.rejects(store.getFile('x.db', join(root.path, 'no-such-dir', 'x.db')), (err) => {
      assertStoreError(err, 'ERR_SNAPSHOT_STORE');
      assert.match(err.message, /^local: get x\.db: ENOENT/);
      return true;
    });
    await store.close();
  });

  it('refuses an empty path', () => {
    assert.throws(
      () => new LocalSnapshotStore({ path: '' }),
      (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_CONFIG');
        return true;
      },
    );
  });
});
