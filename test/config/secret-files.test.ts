/**
 * Files holding a secret are refused when group or others may access them, as
 * the snapshot key file already was: the NATS creds, seed and TLS key, the SFTP
 * private key, and a config file holding a password, token or secret. The error
 * names the key and says `chmod 600 FILE`; the CLI prints it and exits 2.
 * A half-set user/password pair is a config error.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../src/config/config-error.ts';
import { loadConfig } from '../../src/config/load-config.ts';
import { configFileWarning } from '../../src/config/secret-files.ts';
import { spawnCli } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';

function file(dir: string, name: string, text: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  chmodSync(path, mode); // whatever the umask
  return path;
}

function loadError(path: string): ConfigError {
  try {
    loadConfig(path);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

describe('secret files', () => {
  const cases: { key: string; toml: (path: string) => string }[] = [
    { key: 'nats.creds_file', toml: (p) => `[nats]\ncreds_file = ${JSON.stringify(p)}\n` },
    { key: 'nats.seed_file', toml: (p) => `[nats]\nseed_file = ${JSON.stringify(p)}\n` },
    {
      key: 'nats.key_file',
      toml: (p) => `[nats]\ncert_file = "/etc/cert.pem"\nkey_file = ${JSON.stringify(p)}\n`,
    },
    {
      key: 'snapshot.sftp.private_key',
      toml: (p) => `[snapshot.sftp]\nprivate_key = ${JSON.stringify(p)}\n`,
    },
  ];
  for (const { key, toml } of cases) {
    it(`${key}: refused when group or others may read it, accepted at 0600`, () => {
      using dir = tempDir();
      const secret = file(dir.path, 'secret', 'SUAEXAMPLE\n', 0o644);
      const config = file(dir.path, 'config.toml', toml(secret), 0o644);
      const err = loadError(config);
      assert.match(err.message, new RegExp(`config key "${key.replaceAll('.', '\\.')}".*mode 0644`));
      assert.equal(err.hint, `chmod 600 ${JSON.stringify(secret)}`);
      for (const mode of [0o640, 0o604]) {
        chmodSync(secret, mode);
        loadError(config);
      }
      chmodSync(secret, 0o600);
      loadConfig(config);
    });
  }

  it('a readable config file holding a password, token or secret gets a warning; private, or without one, none', () => {
    using dir = tempDir();
    for (const toml of [
      '[nats]\nuser_name = "a"\nuser_password = "p"\n',
      '[nats]\ntoken = "t"\n',
      '[snapshot.s3]\nsecret = "s"\n',
      '[snapshot.sftp]\nurl = "sftp://me:pw@host/snaps"\n',
    ]) {
      const path = file(dir.path, 'config.toml', toml, 0o644);
      // HarmonyLite's example configs hold passwords and ship readable: they still start.
      const config = loadConfig(path);
      assert.match(
        configFileWarning(config, path) ?? '',
        /config file \(it holds [a-z0-9_.]+\).*mode 0644.*chmod 600/,
      );
      chmodSync(path, 0o600);
      assert.equal(configFileWarning(config, path), undefined);
    }
    const plain = file(dir.path, 'plain.toml', '[nats]\nuser_name = ""\nurls = ["nats://h:4222"]\n', 0o644);
    assert.equal(configFileWarning(loadConfig(plain), plain), undefined);
  });

  it('user_name and user_password must be given together', () => {
    using dir = tempDir();
    for (const toml of ['[nats]\nuser_password = "p"\n', '[nats]\nuser_name = "u"\n']) {
      const err = loadError(file(dir.path, 'config.toml', toml, 0o600));
      assert.match(err.message, /"nats\.user_name" and "nats\.user_password" must be given together/);
    }
  });

  it('the CLI prints the error and "Try: chmod 600 FILE" for a readable key file, exit 2', async () => {
    using dir = tempDir();
    const seed = file(dir.path, 'node.nk', 'SUAFAKESEED', 0o644);
    const config = file(dir.path, 'config.toml', `[nats]\nseed_file = ${JSON.stringify(seed)}\n`, 0o600);
    const cli = spawnCli(['-config', config]);
    assert.equal(await cli.exited, 2);
    const out = cli.output.join('\n');
    assert.match(out, /^Error: config key "nats\.seed_file".*accessible by group or others/m);
    assert.ok(out.includes(`Try: chmod 600 ${JSON.stringify(seed)}`), out);
  });
});
