import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { inspect } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { SftpSnapshotStore, type SftpSnapshotStoreOptions } from '../../../src/snapshot/stores/sftp-store.ts';
import {
  freePort,
  generateSshKeyPair,
  startSftpServer,
  startSshdServer,
  startTcpProxy,
  type SftpServer,
  type SshKeyPair,
} from '../../helpers/protocol-servers.ts';
import { tempDir } from '../../helpers/temp-dir.ts';
import { assertStoreError, runSnapshotStoreConformance, writeRandomFile } from './conformance.ts';

const USER = 'snapshotter';
const PASS = 'sftp-Pa55word-never-shown';

const keys = tempDir('hl-sftp-keys-');
let clientKey: SshKeyPair;
let rclone: SftpServer; // password (and key) auth, no posix-rename: the fallback rename path
let sshd: SftpServer; // OpenSSH: key auth, posix-rename and fsync extensions

before(async () => {
  clientKey = generateSshKeyPair(keys.path, 'client_key');
  const authorizedKeysPath = join(keys.path, 'authorized_keys');
  writeFileSync(authorizedKeysPath, `${clientKey.publicKey}\n`);
  [rclone, sshd] = await Promise.all([
    startSftpServer({ user: USER, pass: PASS, authorizedKeysPath }),
    startSshdServer({ authorizedKeysPath }),
  ]);
});
after(async () => {
  await Promise.all([rclone?.stop(), sshd?.stop()]);
  keys.remove();
});

let n = 0;
function rcloneOptions(overrides: Partial<SftpSnapshotStoreOptions> = {}): SftpSnapshotStoreOptions {
  return {
    url: `${rclone.url}clusters/c${++n}/snapshots`,
    knownHostsPath: rclone.knownHostsPath,
    ...overrides,
  };
}
function sshdOptions(overrides: Partial<SftpSnapshotStoreOptions> = {}): SftpSnapshotStoreOptions {
  return {
    url: `${sshd.url}/clusters/c${++n}/snapshots`,
    privateKeyPath: clientKey.privateKeyPath,
    hostFingerprint: sshd.hostKeyFingerprint,
    ...overrides,
  };
}

runSnapshotStoreConformance('sftp (rclone serve sftp, password)', async () => {
  const o = rcloneOptions();
  return { store: new SftpSnapshotStore(o), reopen: () => new SftpSnapshotStore(o), cleanup: async () => {} };
});

runSnapshotStoreConformance('sftp (OpenSSH sshd, key)', async () => {
  const o = sshdOptions();
  return { store: new SftpSnapshotStore(o), reopen: () => new SftpSnapshotStore(o), cleanup: async () => {} };
});

describe('SftpSnapshotStore', () => {
  it('creates a missing directory, level by level, on open', async () => {
    const store = new SftpSnapshotStore({ ...rcloneOptions(), url: `${rclone.url}deep/er/dir` });
    assert.equal(existsSync(join(rclone.dir, 'deep')), false);
    await store.open();
    await store.putBytes('x.db', new Uint8Array([1]));
    assert.deepEqual(await readdir(join(rclone.dir, 'deep', 'er', 'dir')), ['x.db']);
    assert.equal(store.description, `sftp ${USER}@127.0.0.1:${rclone.port}/deep/er/dir`);
    await store.close();
  });

  it('authenticates with a private key alone', async () => {
    const store = new SftpSnapshotStore(
      rcloneOptions({
        url: `sftp://${USER}@127.0.0.1:${rclone.port}/key-only`,
        privateKeyPath: clientKey.privateKeyPath,
      }),
    );
    await store.open();
    await store.putBytes('k.db', new Uint8Array([1]));
    await store.close();
  });

  describe('host key verification', () => {
    it('refuses an unknown host key, naming its fingerprint', async () => {
      const emptyKnownHosts = join(keys.path, 'empty_known_hosts');
      writeFileSync(emptyKnownHosts, '# nothing yet\n');
      const store = new SftpSnapshotStore(rcloneOptions({ knownHostsPath: emptyKnownHosts }));
      await assert.rejects(store.open(), (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_HOST_KEY');
        assert.ok(err.message.startsWith('sftp: open: host key '), err.message);
        assert.ok(err.message.includes(rclone.hostKeyFingerprint), err.message);
        assert.match(err.message, /not trusted/);
        return true;
      });
      await store.close();
    });

    it('uses ~/.ssh/known_hosts when nothing is configured', async () => {
      const home = tempDir('hl-sftp-home-');
      const savedHome = process.env['HOME'];
      try {
        process.env['HOME'] = home.path;
        const bare = new SftpSnapshotStore({ url: `${rclone.url}home-default` });
        await assert.rejects(bare.open(), (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_STORE_HOST_KEY');
          assert.ok(err.message.includes(join(home.path, '.ssh', 'known_hosts')), err.message);
          return true;
        });
        await bare.close();
        await mkdir(join(home.path, '.ssh'));
        writeFileSync(join(home.path, '.ssh', 'known_hosts'), readFileSync(rclone.knownHostsPath));
        const trusted = new SftpSnapshotStore({ url: `${rclone.url}home-default` });
        await trusted.open();
        await trusted.close();
      } finally {
        if (savedHome === undefined) delete process.env['HOME'];
        else process.env['HOME'] = savedHome;
        home.remove();
      }
    });

    it('accepts the right fingerprint, in the forms people paste', async () => {
      const bare = sshd.hostKeyFingerprint.replace(/^SHA256:/, '');
      for (const fingerprint of [sshd.hostKeyFingerprint, bare, `${bare}=`]) {
        const store = new SftpSnapshotStore(sshdOptions({ hostFingerprint: fingerprint }));
        await store.open();
        await store.close();
      }
    });

    it('refuses a wrong fingerprint', async () => {
      const store = new SftpSnapshotStore(sshdOptions({ hostFingerprint: rclone.hostKeyFingerprint }));
      await assert.rejects(store.open(), (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_HOST_KEY');
        assert.ok(err.message.includes(sshd.hostKeyFingerprint), err.message);
        return true;
      });
      await store.close();
    });

    it('accepts a key in known_hosts, also hashed (ssh-keygen -H)', async () => {
      const hashed = join(keys.path, 'hashed_known_hosts');
      writeFileSync(hashed, readFileSync(sshd.knownHostsPath));
      execFileSync('ssh-keygen', ['-q', '-H', '-f', hashed], { stdio: 'ignore' }); // also writes <file>.old
      assert.match(readFileSync(hashed, 'utf8'), /^\|1\|/);
      for (const knownHostsPath of [sshd.knownHostsPath, hashed]) {
        const store = new SftpSnapshotStore(sshdOptions({ hostFingerprint: '', knownHostsPath }));
        await store.open();
        await store.close();
      }
    });

    it('reports a changed host key as such', async () => {
      // rclone's known_hosts line, rewritten to name the sshd server's address
      const changed = join(keys.path, 'changed_known_hosts');
      writeFileSync(
        changed,
        readFileSync(rclone.knownHostsPath, 'utf8').replace(`:${rclone.port} `, `:${sshd.port} `),
      );
      const store = new SftpSnapshotStore(sshdOptions({ hostFingerprint: '', knownHostsPath: changed }));
      await assert.rejects(store.open(), (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_HOST_KEY');
        assert.match(err.message, /CHANGED/);
        return true;
      });
      await store.close();
    });

    it('accepts any key only with insecureIgnoreHostKey, and says so in the description', async () => {
      const store = new SftpSnapshotStore({ url: `${rclone.url}insecure`, insecureIgnoreHostKey: true });
      assert.match(store.description, /host key NOT verified/);
      await store.open();
      await store.close();
    });
  });

  it('names backend and operation on a wrong password and never shows it', async () => {
    const wrong = 'Wr0ng-sftp-secret-XYZ';
    const store = new SftpSnapshotStore(
      rcloneOptions({ url: `sftp://${USER}:${wrong}@127.0.0.1:${rclone.port}/auth` }),
    );
    assert.ok(!store.description.includes(wrong));
    const startedMs = Date.now();
    const file = await writeRandomFile(join(keys.path, 'auth.bin'), 4 * 1024 * 1024);
    for (const attempt of [
      () => store.open(),
      () => store.putBytes('x.db', new Uint8Array([1])),
      () => store.putFile('x.db', file),
    ]) {
      await assert.rejects(attempt(), (err) => {
        assertStoreError(err, 'ERR_SNAPSHOT_STORE_AUTH');
        assert.match(err.message, /^sftp: (open|put x\.db): authentication failed for user snapshotter/);
        for (const text of [err.message, String(err), inspect(err, { depth: 5 })]) {
          assert.ok(!text.includes(wrong), `secret in: ${text}`);
        }
        return true;
      });
    }
    assert.ok(Date.now() - startedMs < 10_000, 'auth failures are not retried');
    await store.close();
  });

  it('refuses a key the server does not know', async () => {
    const stranger = generateSshKeyPair(keys.path, 'stranger_key');
    const store = new SftpSnapshotStore(sshdOptions({ privateKeyPath: stranger.privateKeyPath }));
    await assert.rejects(store.open(), (err) => {
      assertStoreError(err, 'ERR_SNAPSHOT_STORE_AUTH');
      return true;
    });
    await store.close();
  });

  it('fails fast with ERR_SNAPSHOT_STORE_UNREACHABLE when nothing listens', async () => {
    const port = await freePort();
    const store = new SftpSnapshotStore({
      url: `sftp://u:${PASS}@127.0.0.1:${port}/x`,
      insecureIgnoreHostKey: true,
    });
    const startedMs = Date.now();
    await assert.rejects(store.open(), (err) => {
      assertStoreError(err, 'ERR_SNAPSHOT_STORE_UNREACHABLE');
      assert.equal(err.message, `sftp: open: cannot connect to 127.0.0.1:${port} (ECONNREFUSED)`);
      return true;
    });
    assert.ok(Date.now() - startedMs < 5000, `took ${Date.now() - startedMs} ms`);
    await store.close();
  });

  it('reconnects and retries when the connection drops mid-upload', async () => {
    const proxy = await startTcpProxy(sshd.port);
    const files = tempDir('hl-sftp-drop-');
    try {
      const big = await writeRandomFile(join(files.path, 'big.bin'), 8 * 1024 * 1024);
      const known = join(files.path, 'known_hosts');
      writeFileSync(
        known,
        readFileSync(sshd.knownHostsPath, 'utf8').replace(`:${sshd.port} `, `:${proxy.port} `),
      );
      const dir = join(sshd.dir, 'dropped');
      const store = new SftpSnapshotStore({
        url: `sftp://${sshd.user}@127.0.0.1:${proxy.port}${dir}`,
        privateKeyPath: clientKey.privateKeyPath,
        knownHostsPath: known,
      });
      await store.open();
      let dropped = false;
      await store.putFile('snap.db', big, {
        onProgress: (bytes) => {
          if (!dropped && bytes > 1024 * 1024) {
            dropped = true;
            proxy.dropConnections();
          }
        },
      });
      assert.ok(dropped);
      assert.ok(proxy.connections() >= 2, 'a second connection was made');
      assert.deepEqual(
        (await store.list()).map((o) => [o.name, o.size]),
        [['snap.db', 8 * 1024 * 1024]],
      );
      assert.deepEqual(await readdir(dir), ['snap.db'], 'the broken upload left no temporary file behind');
      await store.close();
    } finally {
      await proxy.stop();
      files.remove();
    }
  });

  it('refuses unusable urls with ERR_SNAPSHOT_STORE_CONFIG, without echoing the password', () => {
    for (const bad of ['not a url:zz9', 'ftp://u:zz9@host/x', 'sftp://host/x']) {
      assert.throws(
        () => new SftpSnapshotStore({ url: bad }),
        (err) => {
          assertStoreError(err, 'ERR_SNAPSHOT_STORE_CONFIG');
          assert.ok(!err.message.includes('zz9'), err.message);
          return true;
        },
      );
    }
  });
});
