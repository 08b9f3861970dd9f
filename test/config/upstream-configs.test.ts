/**
 * A HarmonyLite user's files work unchanged: every example config and every TOML
 * block of HarmonyLite's documentation loads, with the meaning HarmonyLite gives
 * each key (the files are written from test/fixtures/upstream-harmonylite-files.ts).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Config } from '../../src/config/config.ts';
import { ConfigError } from '../../src/config/config-error.ts';
import { loadConfig } from '../../src/config/load-config.ts';
import { UPSTREAM_FILES } from '../fixtures/upstream-harmonylite-files.ts';
import { tempDir } from '../helpers/temp-dir.ts';

const MIB = 1024 * 1024;

/** Writes every upstream file under `root` (same relative paths) and loads each TOML file, from `root`. */
function loadAll(root: string): Map<string, Config> {
  for (const [name, text] of Object.entries(UPSTREAM_FILES)) {
    mkdirSync(dirname(join(root, name)), { recursive: true });
    writeFileSync(join(root, name), text);
  }
  const loaded = new Map<string, Config>();
  const failed: string[] = [];
  for (const name of Object.keys(UPSTREAM_FILES).filter((n) => n.endsWith('.toml'))) {
    try {
      loaded.set(name, loadConfig(name, root));
    } catch (err) {
      failed.push(`${name}: ${(err as Error).message}`);
    }
  }
  assert.deepEqual(failed, [], 'every upstream config loads');
  return loaded;
}

function get(configs: Map<string, Config>, name: string): Config {
  const c = configs.get(name);
  assert.ok(c !== undefined, `${name} loaded`);
  return c;
}

describe("HarmonyLite's own config files", () => {
  it('all 54 TOML files (config.toml, examples, documentation blocks) load from the working directory', () => {
    using dir = tempDir();
    const configs = loadAll(dir.path);
    assert.equal(configs.size, 54);
  });

  it('keep their meaning: leader_ttl, bind_address ":-1", relative server_config, documented-only keys', () => {
    using dir = tempDir();
    const configs = loadAll(dir.path);
    const node1 = get(configs, 'examples/node-1-config.toml');
    assert.equal(node1.snapshot.leader_ttl, 30000);
    assert.equal(node1.snapshot.interval, 60000);
    assert.equal(node1.db_path, '/tmp/harmonylite-1.db');
    // Relative to the working directory (run-cluster.sh runs from the repository root).
    assert.equal(node1.nats.server_config, join(dir.path, 'examples/nats-server-1.conf'));
    assert.equal(node1.nats.user_name, 'harmonylite');
    assert.equal(node1.replication_log.shards, 2);
    assert.equal(get(configs, 'doc-toml/snapshots-1.toml').snapshot.leader_ttl, 60000);
    assert.equal(get(configs, 'doc-toml/configuration-reference-11.toml').nats.bind_address, ':-1');
    assert.equal(get(configs, 'doc-toml/configuration-reference-3.toml').nats.bind_address, ':-1');
    assert.equal(get(configs, 'config.toml').nats.bind_address, '0.0.0.0:4222');
    // Documented but never read by HarmonyLite: accepted with the documented meaning.
    const tls = get(configs, 'doc-toml/nats-configuration-7.toml').nats;
    assert.deepEqual(
      [tls.ca_file, tls.cert_file, tls.key_file],
      ['/etc/harmonylite/ca.pem', '/etc/harmonylite/client-cert.pem', '/etc/harmonylite/client-key.pem'],
    );
    assert.deepEqual(get(configs, 'doc-toml/replication-0.toml').exclude_tables, [
      'local_cache',
      'user_sessions',
    ]);
    assert.equal(get(configs, 'doc-toml/replication-1.toml').nats.max_payload, 4 * MIB);
    // The defaults HarmonyLite documents.
    assert.equal(get(configs, 'doc-toml/nats-configuration-0.toml').snapshot.leader_ttl, 30000);
  });

  it('a documented-only key and its own name together are refused, naming both', () => {
    using dir = tempDir();
    const path = join(dir.path, 'c.toml');
    writeFileSync(path, '[nats]\nca_file = "/a.pem"\ntls_ca_file = "/b.pem"\n');
    assert.throws(
      () => loadConfig(path),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message ===
          'config keys "nats.tls_ca_file" and "nats.ca_file" are the same setting: give only one',
    );
    writeFileSync(path, 'exclude_tables = ["a"]\n[sharding]\nignore_tables = ["b"]\n');
    assert.deepEqual(loadConfig(path).exclude_tables, ['a', 'b']);
  });

  it('bind_address takes port -1 (a random port) and still refuses nonsense', () => {
    using dir = tempDir();
    const path = join(dir.path, 'c.toml');
    for (const ok of [':-1', '127.0.0.1:-1', '[::1]:-1', ':4222', '']) {
      writeFileSync(path, `[nats]\nbind_address = ${JSON.stringify(ok)}\n`);
      assert.equal(loadConfig(path).nats.bind_address, ok);
    }
    for (const bad of [':-2', 'localhost', ':-1:', ':65536']) {
      writeFileSync(path, `[nats]\nbind_address = ${JSON.stringify(bad)}\n`);
      assert.throws(() => loadConfig(path), /config key "nats\.bind_address" must be an address/);
    }
    writeFileSync(path, '[snapshot]\nleader_ttl = 0\n');
    assert.throws(
      () => loadConfig(path),
      /config key "snapshot\.leader_ttl" must be a number greater than 0/,
    );
  });
});
