import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { WebDavSnapshotStore } from '../../../src/snapshot/stores/webdav-store.ts';
import {
  freePort,
  startTcpProxy,
  startWebDavServer,
  type WebDavServer,
} from '../../helpers/protocol-servers.ts';
import { tempDir } from '../../helpers/temp-dir.ts';
import { assertStoreError, runSnapshotStoreConformance, sha256File, writeRandomFile } from './conformance.ts';

const USER = 'snapshotter';
const PASS = 'dav-Pa55word-never-shown';

let server: WebDavServer;
before(async () => {
  server = await startWebDavServer({ user: USER, pass: PASS });
});
after(() => server.stop());

let n = 0;
/** HarmonyLite's url form, secret in the query string. */
function url(dir: string, pass = PASS): string {
  return `${server.url}/?dir=${encodeURIComponent(dir)}&login=${USER}&secret=${encodeURIComponent(pass)}`;
}

runSnapshotStoreConformance('webdav', async () => {
  const u = url(`/clusters/c${++n}/snapshots`);
  return {
    store: new WebDavSnapshotStore({ url: u }),
    reopen: () => new WebDavSnapshotStore({ url: u }),
    cleanup: async () => {},
  };
});

describe('WebDavSnapshotStore', () => {
  it('creates a missing directory, level by level, on open', async () => {
    const store = new WebDavSnapshotStore({ url: url('/a/b/c') });
    assert.equal(existsSync(join(server.dir, 'a')), false);
    await store.open();
    await store.putBytes('x.db', new Uint8Array([1]));
    assert.deepEqual(await readdir(join(server.dir, 'a', 'b', 'c')), ['x.db']);
    assert.equal(store.description, `webdav ${server.url}/a/b/c/`);
    await store.close();
  });

  it('uses the url path as the base and accepts credentials in the authority', async () => {
    const store = new WebDavSnapshotStore({
      url: `${server.url.replace('//', `//${USER}:${encodeURIComponent(PASS)}@`)}/base/?dir=inner`,
    });
    assert.ok(!store.description.includes(PASS));
    // the base must exist: the store only creates dir below it
    await assert.rejects(store.open(), (err) => {
      assertStoreError(err, 'ERR_SNAPSHOT_STORE');
      assert.match(err.message, /^webdav: open: /);
      return true;
    });
    await new WebDavSnapshotStore({ url: url('/base') }).open();
    await store.open();
    await store.putBytes('y.db', new Uint8Array([2]));
    assert.deepEqual(await readdir(join(server.dir, 'base', 'inner')), ['y.db']);
    await store.close();
  });

  it('hides leftover temporary files and subdirectories from list', async () => {
    const store = new WebDavSnapshotStore({ url: url('/leftovers') });
    await store.open();
    await store.putBytes('real.db', new Uint8Array([1]));
    await writeFile(join(server.dir, 'leftovers', '.real.db.0123456789ab.partial'), 'crashed mid-upload');
    await store.putBytes('other.db', new Uint8Array([1]));
    await new WebDavSnapshotStore({ url: url('/leftovers/sub') }).open();
    assert.deepEqual(
      (await store.list()).map((o) => o.name),
      ['other.db', 'real.db'],
    );
    await store.close();
  });

  it('names backend and operation on wrong credentials and never shows the secret', async () => {
    const wrong = 'Wr0ng-dav-secret-XYZ';
    const store = new WebDavSnapshotStore({ url: url('/auth', wrong) });
    assert.ok(!store.description.includes(wrong));
    const files = tempDir('hl-auth-');
    const file = await writeRandomFile(join(files.path, 'auth.bin'), 4 * 1024 * 1024);
    for (const attempt of [
      () => store.open(),
      () => store.list(),
      () => store.putBytes('x.db', new Uint8Array([1])),
      () => store.putFile('x.db', file),
    ]) {
      await assert.rejects(attempt(), (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_AUTH');
        assert.match(
          err.message,
          /^webdav: (open|list|put x\.db): access denied \(check login\/secret in the url\): .*401/,
        );
        for (const text of [err.message, String(err), inspect(err, { depth: 5 })]) {
          assert.ok(!text.includes(wrong), `secret in: ${text}`);
          assert.ok(
            !text.includes(Buffer.from(`${USER}:${wrong}`).toString('base64')),
            `basic auth in: ${text}`,
          );
        }
        return true;
      });
    }
    files.remove();
    await store.close();
  });

  it('fails fast with ERR_SNAPSHOT_STORE_UNREACHABLE when nothing listens', async () => {
    const port = await freePort();
    const store = new WebDavSnapshotStore({ url: `http://127.0.0.1:${port}/?dir=/x&login=u&secret=${PASS}` });
    const startedMs = Date.now();
    await assert.rejects(store.open(), (err) => {
      assertStoreError(err, 'ERR_SNAPSHOT_STORE_UNREACHABLE');
      assert.equal(err.message, `webdav: open: cannot connect to 127.0.0.1:${port} (ECONNREFUSED)`);
      return true;
    });
    assert.ok(Date.now() - startedMs < 5000, `took ${Date.now() - startedMs} ms`);
    await store.close();
  });

  it('retries an upload and a download whose connection drops midway', async () => {
    const proxy = await startTcpProxy(server.port);
    const files = tempDir('hl-webdav-drop-');
    try {
      const big = await writeRandomFile(join(files.path, 'big.bin'), 8 * 1024 * 1024);
      const store = new WebDavSnapshotStore({
        url: `http://127.0.0.1:${proxy.port}/?dir=/dropped&login=${USER}&secret=${encodeURIComponent(PASS)}`,
      });
      await store.open();
      let drops = 0;
      const dropOnce = (bytes: number) => {
        if (drops === 0 && bytes > 1024 * 1024) {
          drops++;
          proxy.dropConnections();
        }
      };
      await store.putFile('snap.db', big, { onProgress: dropOnce });
      assert.equal(drops, 1);
      assert.deepEqual(
        await readdir(join(server.dir, 'dropped')),
        ['snap.db'],
        'no temporary file left behind',
      );
      drops = 0;
      const out = join(files.path, 'out.bin');
      await store.getFile('snap.db', out, { onProgress: dropOnce });
      assert.equal(drops, 1);
      assert.equal(await sha256File(out), await sha256File(big));
      await store.close();
    } finally {
      await proxy.stop();
      files.remove();
    }
  });

  it('refuses unusable urls with ERR_SNAPSHOT_STORE_CONFIG, without echoing them', () => {
    for (const bad of [
      'not a url secret=zz9',
      'ftp://host/x?secret=zz9',
      'https://host/?dir=/a/../b&secret=zz9',
    ]) {
      assert.throws(
        () => new WebDavSnapshotStore({ url: bad }),
        (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_STORE_CONFIG');
          assert.ok(!err.message.includes('zz9'), err.message);
          return true;
        },
      );
    }
  });
});
