import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { S3SnapshotStore, type S3SnapshotStoreOptions } from '../../../src/snapshot/stores/s3-store.ts';
import { freePort, startS3Server, startTcpProxy, type S3Server } from '../../helpers/protocol-servers.ts';
import { tempDir } from '../../helpers/temp-dir.ts';
import { assertStoreError, runSnapshotStoreConformance, sha256File, writeRandomFile } from './conformance.ts';

let server: S3Server;
before(async () => {
  server = await startS3Server();
});
after(() => server.stop());

let n = 0;
function options(overrides: Partial<S3SnapshotStoreOptions> = {}): S3SnapshotStoreOptions {
  return {
    // HarmonyLite's endpoint form: host:port, scheme from use_ssl
    endpoint: server.endpoint.replace('http://', ''),
    useSsl: false,
    bucket: 'snapshots',
    path: `cluster-${++n}/snapshots`,
    accessKey: server.accessKey,
    secret: server.secret,
    forcePathStyle: true,
    partSizeBytes: 5 * 1024 * 1024, // the minimum: several parts per test file
    concurrency: 2,
    ...overrides,
  };
}

runSnapshotStoreConformance('s3', async () => {
  const o = options();
  return { store: new S3SnapshotStore(o), reopen: () => new S3SnapshotStore(o), cleanup: async () => {} };
});

describe('S3SnapshotStore', () => {
  it('creates a missing bucket on open', async () => {
    const store = new S3SnapshotStore(options({ bucket: 'fresh-bucket' }));
    assert.equal(existsSync(join(server.dir, 'fresh-bucket')), false);
    await store.open();
    assert.equal(existsSync(join(server.dir, 'fresh-bucket')), true);
    await store.putBytes('x.db', new Uint8Array([1]));
    // a second node opening the now-existing bucket is fine too
    const other = new S3SnapshotStore(
      options({ bucket: 'fresh-bucket', path: store.description.match(/prefix (\S+)\//)![1]! }),
    );
    await other.open();
    assert.deepEqual(
      (await other.list()).map((o) => o.name),
      ['x.db'],
    );
    await other.close();
    await store.close();
  });

  it('keeps stores with different prefixes in one bucket apart, and ignores nested keys', async () => {
    const a = new S3SnapshotStore(options({ path: 'shared/a' }));
    const b = new S3SnapshotStore(options({ path: 'shared' }));
    await a.open();
    await b.open();
    await a.putBytes('in-a.db', new Uint8Array([1]));
    await b.putBytes('in-b.db', new Uint8Array([2]));
    assert.deepEqual(
      (await a.list()).map((o) => o.name),
      ['in-a.db'],
    );
    assert.deepEqual(
      (await b.list()).map((o) => o.name),
      ['in-b.db'],
    );
    await a.close();
    await b.close();
  });

  it('accepts a full endpoint URL and an empty path (bucket root)', async () => {
    const store = new S3SnapshotStore(
      options({ endpoint: server.endpoint, useSsl: true, bucket: 'root-bucket', path: '' }),
    );
    assert.equal(store.description, `s3 bucket root-bucket at ${server.endpoint}`);
    await store.open();
    await store.putBytes('top.db', new Uint8Array([3]));
    assert.ok(existsSync(join(server.dir, 'root-bucket', 'top.db._S3rver_object')));
    await store.close();
  });

  it('names backend and operation on wrong credentials and never shows the secret', async () => {
    const secret = 'wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY';
    const sessionToken = 'FQoGZXIvYXdzEXAMPLETOKEN';
    const store = new S3SnapshotStore(options({ accessKey: 'NOT-A-KNOWN-KEY', secret, sessionToken }));
    assert.ok(!store.description.includes(secret));
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
          /^s3: (open|list|put x\.db): access denied \(check access_key\/secret\/session_token\)/,
        );
        assert.equal(err.backend, 's3');
        for (const text of [err.message, String(err), inspect(err, { depth: 5 })]) {
          assert.ok(!text.includes(secret), `secret in: ${text}`);
          assert.ok(!text.includes(sessionToken), `session token in: ${text}`);
        }
        return true;
      });
    }
    files.remove();
    await store.close();
  });

  it('takes credentials from the standard AWS environment variables when access_key is empty', async () => {
    const saved = { id: process.env['AWS_ACCESS_KEY_ID'], key: process.env['AWS_SECRET_ACCESS_KEY'] };
    try {
      process.env['AWS_ACCESS_KEY_ID'] = server.accessKey;
      process.env['AWS_SECRET_ACCESS_KEY'] = server.secret;
      const store = new S3SnapshotStore(options({ accessKey: '', secret: '' }));
      await store.open();
      await store.putBytes('from-env.db', new Uint8Array([1]));
      await store.close();

      process.env['AWS_ACCESS_KEY_ID'] = 'UNKNOWN-ENV-KEY';
      const rejected = new S3SnapshotStore(options({ accessKey: '', secret: '' }));
      await assert.rejects(rejected.open(), (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_AUTH');
        return true;
      });
      await rejected.close();
    } finally {
      restoreEnv('AWS_ACCESS_KEY_ID', saved.id);
      restoreEnv('AWS_SECRET_ACCESS_KEY', saved.key);
    }
  });

  it('fails fast with ERR_SNAPSHOT_STORE_UNREACHABLE when nothing listens', async () => {
    const port = await freePort();
    const store = new S3SnapshotStore(options({ endpoint: `127.0.0.1:${port}` }));
    const startedMs = Date.now();
    await assert.rejects(store.open(), (err) => {
      assertStoreError(err, 'ERR_SNAPSHOT_STORE_UNREACHABLE');
      assert.equal(err.message, `s3: open: cannot connect to 127.0.0.1:${port} (ECONNREFUSED)`);
      return true;
    });
    assert.ok(Date.now() - startedMs < 5000, `took ${Date.now() - startedMs} ms`);
    await store.close();
  });

  it('retries an upload and a download whose connection drops midway', async () => {
    const proxy = await startTcpProxy(server.port);
    const files = tempDir('hl-s3-drop-');
    try {
      const big = await writeRandomFile(join(files.path, 'big.bin'), 16 * 1024 * 1024);
      const store = new S3SnapshotStore(options({ endpoint: `127.0.0.1:${proxy.port}` }));
      await store.open();
      let drops = 0;
      const dropOnce = (bytes: number) => {
        if (drops === 0 && bytes > 0 && bytes < 16 * 1024 * 1024) {
          drops++;
          proxy.dropConnections();
        }
      };
      await store.putFile('snap.db', big, { onProgress: dropOnce });
      assert.equal(drops, 1);
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

  it('refuses unusable options with ERR_SNAPSHOT_STORE_CONFIG', () => {
    for (const bad of [
      { bucket: '' },
      { endpoint: 'http://user:pw@host:9000' },
      { endpoint: 'http://[bad' },
    ]) {
      assert.throws(
        () => new S3SnapshotStore(options(bad)),
        (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_STORE_CONFIG');
          assert.ok(!err.message.includes('pw@'));
          return true;
        },
      );
    }
  });
});

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}
