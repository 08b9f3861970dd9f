import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { TomlError } from 'smol-toml';
import { ConfigError } from '../../src/config/config-error.ts';
import { defaultConfig } from '../../src/config/config.ts';
import { loadConfig, requireDatabase } from '../../src/config/load-config.ts';
import { spawnCli } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';

function writeConfig(dir: string, text: string, name = 'config.toml'): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

/** Runs `fn`, asserts it throws a ConfigError, and returns it. */
function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'ERR_CONFIG');
    assert.equal(err.name, 'ConfigError');
    return err;
  }
  assert.fail('expected a ConfigError, nothing was thrown');
}

/** The error that loading `text` as a config file gives. */
function loadError(text: string): ConfigError {
  using dir = tempDir();
  const path = writeConfig(dir.path, text);
  return configError(() => loadConfig(path));
}

/** A HarmonyLite config file as its users write it (the seed's example and more). */
const HARMONYLITE_CONFIG = fileURLToPath(new URL('../fixtures/config/harmonylite.toml', import.meta.url));

describe('loadConfig', () => {
  it('loads a HarmonyLite config file unchanged, keeping defaults for the keys it omits', () => {
    const config = loadConfig(HARMONYLITE_CONFIG);
    const expected = defaultConfig();
    expected.db_path = '/path/to/your.db';
    expected.node_id = 1;
    expected.seq_map_path = '/var/lib/harmonylite/seq-map.cbor';
    Object.assign(expected.replication_log, { shards: 4, max_entries: 1024, replicas: 3, compress: true });
    Object.assign(expected.snapshot, { enabled: true, store: 'nats', interval: 3_600_000 });
    Object.assign(expected.nats, {
      urls: ['nats://server1:4222', 'nats://server2:4222'],
      subject_prefix: 'harmonylite-change-log',
      stream_prefix: 'harmonylite-changes',
    });
    expected.prometheus = { enable: true, bind: ':3010', namespace: 'harmonylite', subsystem: 'replication' };
    expected.logging = { verbose: true, format: 'json' };
    expected.health_check = { enable: true, bind: '0.0.0.0:8090', path: '/health', detailed: false };
    assert.deepEqual(config, expected);
  });

  it('loads an empty file as the defaults', () => {
    using dir = tempDir();
    assert.deepEqual(loadConfig(writeConfig(dir.path, '')), defaultConfig());
  });

  it('resolves relative paths against the working directory, as HarmonyLite does, not the config file', () => {
    using dir = tempDir();
    mkdirSync(join(dir.path, 'etc'));
    const path = writeConfig(
      join(dir.path, 'etc'),
      `
db_path = "../data/app.db"
seq_map_path = "seq-map.cbor"
[nats]
server_config = "nats.conf"
seed_file = "keys/seed.nk"
creds_file = "keys/user.creds"
ca_file = "tls/ca.pem"
store_dir = "./jetstream"
server_binary = "./bin/nats-server"
key_file = "/abs/key.pem"
cert_file = "tls/cert.pem"
[snapshot]
temp_dir = "tmp"
[snapshot.sftp]
known_hosts = "ssh/known_hosts"
private_key = "ssh/id_ed25519"
[snapshot.local]
path = "snapshots"
`,
    );
    const cwd = join(dir.path, 'run');
    const config = loadConfig(path, cwd);
    assert.equal(config.db_path, join(dir.path, 'data/app.db'));
    assert.equal(config.seq_map_path, join(cwd, 'seq-map.cbor'));
    assert.equal(config.nats.store_dir, join(cwd, 'jetstream'));
    assert.equal(config.nats.server_binary, join(cwd, 'bin/nats-server'));
    assert.equal(config.nats.key_file, '/abs/key.pem', 'absolute paths are kept');
    assert.equal(config.nats.cert_file, join(cwd, 'tls/cert.pem'));
    assert.equal(config.nats.server_config, join(cwd, 'nats.conf'));
    assert.equal(config.nats.seed_file, join(cwd, 'keys/seed.nk'));
    assert.equal(config.nats.creds_file, join(cwd, 'keys/user.creds'));
    assert.equal(config.nats.ca_file, join(cwd, 'tls/ca.pem'));
    assert.equal(config.snapshot.sftp.known_hosts, join(cwd, 'ssh/known_hosts'));
    assert.equal(config.snapshot.sftp.private_key, join(cwd, 'ssh/id_ed25519'));
    assert.equal(config.snapshot.temp_dir, join(cwd, 'tmp'));
    assert.equal(config.snapshot.local.path, join(cwd, 'snapshots'));
    // The config file itself is found relative to the working directory too.
    assert.equal(loadConfig('../etc/config.toml', cwd).db_path, join(dir.path, 'data/app.db'));
  });

  it('names the file next to the config when a relative path exists there but not in the working directory', () => {
    using dir = tempDir();
    mkdirSync(join(dir.path, 'etc', 'examples'), { recursive: true });
    writeFileSync(join(dir.path, 'etc', 'examples', 'nats-server-1.conf'), 'port: -1\n');
    const path = writeConfig(
      join(dir.path, 'etc'),
      '[nats]\nserver_config = "examples/nats-server-1.conf"\n',
    );
    const err = configError(() => loadConfig(path, dir.path));
    assert.equal(
      err.message,
      `config key "nats.server_config": "examples/nats-server-1.conf" does not exist in the working ` +
        `directory ${JSON.stringify(dir.path)} (relative paths resolve against the working directory, as in ` +
        `HarmonyLite), but ${JSON.stringify(join(dir.path, 'etc', 'examples', 'nats-server-1.conf'))} next ` +
        `to the config file does`,
    );
    assert.equal(
      err.hint,
      `run harmonylite from ${JSON.stringify(join(dir.path, 'etc'))}, or make nats.server_config absolute`,
    );
    // From the config's directory it loads.
    assert.equal(
      loadConfig(path, join(dir.path, 'etc')).nats.server_config,
      join(dir.path, 'etc', 'examples', 'nats-server-1.conf'),
    );
    // The same for the database: the error names both places.
    writeFileSync(join(dir.path, 'etc', 'app.db'), '');
    const dbConfig = writeConfig(join(dir.path, 'etc'), 'db_path = "app.db"\n', 'db.toml');
    assert.match(
      configError(() => loadConfig(dbConfig, dir.path)).message,
      /^config key "db_path": "app\.db" does not exist in the working directory .* next to the config file does$/,
    );
  });

  it('keeps a bare nats-server binary name for the PATH lookup', () => {
    using dir = tempDir();
    const config = loadConfig(writeConfig(dir.path, '[nats]\nserver_binary = "nats-server-2.9"\n'));
    assert.equal(config.nats.server_binary, 'nats-server-2.9');
  });

  it('accepts IPv6 and wildcard listen addresses', () => {
    using dir = tempDir();
    const config = loadConfig(
      writeConfig(
        dir.path,
        '[nats]\nbind_address = "[::1]:4222"\n[prometheus]\nbind = "[::]:3010"\n[health_check]\nbind = ":8090"\n',
      ),
    );
    assert.equal(config.nats.bind_address, '[::1]:4222');
    assert.equal(config.prometheus.bind, '[::]:3010');
    assert.equal(config.health_check.bind, ':8090');
  });

  describe('names the key and what was expected', () => {
    const cases: [what: string, toml: string, message: RegExp][] = [
      ['unknown top-level key', 'dbpath = "x"', /^unknown config key "dbpath"$/],
      ['unknown nested key', '[nats]\nurlz = []', /^unknown config key "nats\.urlz"$/],
      ['unknown section', '[natz]\nurls = []', /^unknown config key "natz"$/],
      [
        'unknown key in a sub-table',
        '[snapshot.s3]\nbukket = "b"',
        /^unknown config key "snapshot\.s3\.bukket"$/,
      ],
      ['key named after an Object.prototype member', 'constructor = 1', /^unknown config key "constructor"$/],
      ['key named __proto__', '[nats]\n__proto__ = 1', /^unknown config key "nats\.__proto__"$/],
      [
        'string for a number',
        'scan_max_changes = "512"',
        /^config key "scan_max_changes" must be a number, got a string \("512"\)$/,
      ],
      ['number for a boolean', 'publish = 1', /^config key "publish" must be a boolean, got a number \(1\)$/],
      [
        'string for a boolean',
        '[replication_log]\ncompress = "yes"',
        /"replication_log\.compress" must be a boolean/,
      ],
      [
        'inline table for a string',
        'db_path = { path = "x" }',
        /^config key "db_path" must be a string, got a table$/,
      ],
      [
        'table header for a string',
        '[db_path]\npath = "x"',
        /^config key "db_path" must be a string, got a table$/,
      ],
      [
        'string for a table',
        'nats = "nats://x"',
        /^config key "nats" must be a table, got a string \("nats:\/\/x"\)$/,
      ],
      ['date for a number', 'node_id = 1979-05-27', /^config key "node_id" must be a number, got a date$/],
      [
        'string for an array',
        '[nats]\nurls = "nats://a:4222"',
        /^config key "nats\.urls" must be an array of strings, got a string/,
      ],
      [
        'array of numbers for an array of strings',
        'exclude_tables = ["logs", 2]',
        /^config key "exclude_tables" must be an array of strings, got a number \(2\) at index 1$/,
      ],
      [
        'zero scan_max_changes',
        'scan_max_changes = 0',
        /^config key "scan_max_changes" must be a number greater than 0, got 0$/,
      ],
      [
        'negative cleanup_interval',
        'cleanup_interval = -1',
        /^config key "cleanup_interval" must be a number greater than 0, got -1$/,
      ],
      [
        'negative sleep_timeout',
        'sleep_timeout = -5',
        /^config key "sleep_timeout" must be a number >= 0, got -5$/,
      ],
      ['negative polling_interval', 'polling_interval = -1', /"polling_interval" must be a number >= 0/],
      ['negative node_id', 'node_id = -1', /^config key "node_id" must be a number >= 0, got -1$/],
      ['fractional node_id', 'node_id = 2.5', /^config key "node_id" must be a whole number, got 2\.5$/],
      [
        'zero shards',
        '[replication_log]\nshards = 0',
        /^config key "replication_log\.shards" must be a number greater than 0, got 0$/,
      ],
      [
        'fractional shards',
        '[replication_log]\nshards = 1.5',
        /^config key "replication_log\.shards" must be a whole number, got 1\.5$/,
      ],
      [
        'zero max_entries',
        '[replication_log]\nmax_entries = 0',
        /"replication_log\.max_entries" must be a number greater/,
      ],
      [
        'too many replicas',
        '[replication_log]\nreplicas = 7',
        /"replication_log\.replicas" must be 1 to 5, got 7$/,
      ],
      [
        'infinite reconnect wait',
        '[nats]\nreconnect_wait_seconds = inf',
        /"nats\.reconnect_wait_seconds" must be a number/,
      ],
      ['NaN interval', '[snapshot]\ninterval = nan', /"snapshot\.interval" must be/],
      [
        'invalid snapshot store',
        '[snapshot]\nstore = "ftp"',
        /^config key "snapshot\.store" must be one of "nats", "s3", "webdav", "sftp", "local", got "ftp"$/,
      ],
      [
        'invalid log format',
        '[logging]\nformat = "xml"',
        /^config key "logging\.format" must be one of "console", "json"/,
      ],
      [
        'subject prefix with a dot',
        '[nats]\nsubject_prefix = "a.b"',
        /"nats\.subject_prefix" must be a non-empty name/,
      ],
      ['empty stream prefix', '[nats]\nstream_prefix = ""', /"nats\.stream_prefix" must be a non-empty name/],
      [
        'bind without a port',
        '[prometheus]\nbind = "localhost"',
        /"prometheus\.bind" must be an address "host:port"/,
      ],
      [
        'port out of range',
        '[health_check]\nbind = ":99999"',
        /"health_check\.bind" must be an address "host:port"/,
      ],
      [
        'bad embedded server address',
        '[nats]\nbind_address = "4222"',
        /"nats\.bind_address" must be an address/,
      ],
      [
        'health path without a slash',
        '[health_check]\npath = "health"',
        /"health_check\.path" must be a path starting/,
      ],
      [
        'client cert without key',
        '[nats]\ncert_file = "c.pem"',
        /"nats\.cert_file" and "nats\.key_file" must be given together/,
      ],
    ];
    for (const [what, toml, message] of cases) {
      it(what, () => {
        assert.match(loadError(toml).message, message);
      });
    }

    it('hints at config.example.toml for an unknown key', () => {
      assert.match(loadError('[nats]\nurlz = []').hint ?? '', /config\.example\.toml/);
    });
  });

  it('reports malformed TOML with the file, line and column', () => {
    using dir = tempDir();
    const path = writeConfig(dir.path, 'db_path = "app.db"\nnode_id = = 2\n');
    const err = configError(() => loadConfig(path));
    assert.match(err.message, /^cannot parse ".*config\.toml" \(line 2, column \d+\): /);
    assert.ok(err.message.includes(path), err.message);
    assert.ok(!err.message.includes('\n'), 'a one-line message');
    assert.ok(err.cause instanceof TomlError);
  });

  it('reports a duplicate key as malformed TOML', () => {
    assert.match(loadError('node_id = 1\nnode_id = 2\n').message, /cannot parse .*\(line 2, column \d+\)/);
  });

  it('refuses a missing config file (HarmonyLite silently ran on defaults) with a hint', () => {
    using dir = tempDir();
    const err = configError(() => loadConfig(join(dir.path, 'nope.toml')));
    assert.match(err.message, /^config file ".*nope\.toml" does not exist$/);
    assert.match(err.hint ?? '', /copy config\.example\.toml/);
  });

  it('refuses a directory as the config file', () => {
    using dir = tempDir();
    const err = configError(() => loadConfig(dir.path));
    assert.match(err.message, /is a directory, expected a TOML file/);
    assert.ok(err.hint !== undefined);
  });

  it(
    'refuses an unreadable config file',
    { skip: process.getuid?.() === 0 ? 'running as root: chmod 000 does not stop root from reading' : false },
    () => {
      using dir = tempDir();
      const path = writeConfig(dir.path, 'node_id = 1\n');
      chmodSync(path, 0o000);
      const err = configError(() => loadConfig(path));
      assert.match(err.message, /^cannot read config file .*config\.toml: .*EACCES/);
    },
  );
});

describe('requireDatabase', () => {
  it('requires db_path', () => {
    const err = configError(() => requireDatabase(defaultConfig()));
    assert.match(err.message, /^config key "db_path" is required$/);
    assert.match(err.hint ?? '', /db_path = /);
  });

  it('requires the database file to exist, with a hint on how to create it', () => {
    using dir = tempDir();
    const config = loadConfig(writeConfig(dir.path, 'db_path = "missing.db"\n'), dir.path);
    const err = configError(() => requireDatabase(config));
    assert.match(err.message, /^database ".*missing\.db" does not exist$/);
    assert.ok(err.message.includes(join(dir.path, 'missing.db')), 'names the resolved path');
    assert.match(err.hint ?? '', /sqlite3 ".*missing\.db" "VACUUM"/);
  });

  it('refuses a db_path that is a directory', () => {
    using dir = tempDir();
    const config = loadConfig(writeConfig(dir.path, 'db_path = "."\n'), dir.path);
    assert.match(configError(() => requireDatabase(config)).message, /"db_path" must name a file/);
  });

  it('accepts an existing database file', () => {
    using dir = tempDir();
    writeFileSync(join(dir.path, 'app.db'), '');
    const config = loadConfig(writeConfig(dir.path, 'db_path = "app.db"\n'), dir.path);
    assert.doesNotThrow(() => requireDatabase(config));
  });
});

describe('[snapshot] encryption_key_file', () => {
  const HEX_KEY = 'a1'.repeat(32);

  /** Loads a config naming `keyFile` (relative to `dir`, the working directory); returns the ConfigError. */
  function keyError(dir: string, keyFile: string): ConfigError {
    const path = writeConfig(dir, `[snapshot]\nencryption_key_file = ${JSON.stringify(keyFile)}\n`);
    const err = configError(() => loadConfig(path, dir));
    assert.match(err.message, /^config key "snapshot\.encryption_key_file": /);
    assert.ok(!err.message.includes('\n'), 'a one-line message');
    return err;
  }

  function keyFile(dir: string, name: string, content: string | Buffer, mode = 0o600): string {
    const path = join(dir, name);
    writeFileSync(path, content, { mode });
    chmodSync(path, mode); // whatever the umask
    return path;
  }

  it('defaults to "" (snapshots not encrypted) and resolves a relative path against the working directory', () => {
    using dir = tempDir();
    assert.equal(loadConfig(writeConfig(dir.path, '')).snapshot.encryption_key_file, '');
    mkdirSync(join(dir.path, 'etc'));
    keyFile(join(dir.path, 'etc'), 'snapshot.key', `${HEX_KEY}\n`);
    const path = writeConfig(join(dir.path, 'etc'), '[snapshot]\nencryption_key_file = "snapshot.key"\n');
    assert.equal(
      loadConfig(path, join(dir.path, 'etc')).snapshot.encryption_key_file,
      join(dir.path, 'etc', 'snapshot.key'),
    );
  });

  it('accepts hex (as openssl rand -hex 32 writes it), base64 and 32 raw bytes, also through a symlink', () => {
    using dir = tempDir();
    const raw = Buffer.from(HEX_KEY, 'hex');
    for (const [name, content] of [
      ['hex.key', `${HEX_KEY}\n`],
      ['b64.key', `${raw.toString('base64')}\n`],
      ['raw.key', raw],
    ] as const) {
      const path = keyFile(dir.path, name, content, 0o400);
      const config = loadConfig(
        writeConfig(dir.path, `[snapshot]\nencryption_key_file = "${name}"\n`),
        dir.path,
      );
      assert.equal(config.snapshot.encryption_key_file, path);
    }
    symlinkSync(join(dir.path, 'hex.key'), join(dir.path, 'link.key'));
    assert.doesNotThrow(() =>
      loadConfig(writeConfig(dir.path, '[snapshot]\nencryption_key_file = "link.key"\n'), dir.path),
    );
  });

  it('refuses a missing file', () => {
    using dir = tempDir();
    const err = keyError(dir.path, 'missing.key');
    assert.match(err.message, /".*missing\.key" does not exist$/);
    assert.match(err.hint ?? '', /openssl rand -hex 32/);
  });

  it('refuses a file group or others can read or write, saying how to fix it', () => {
    using dir = tempDir();
    for (const mode of [0o644, 0o640, 0o602, 0o660]) {
      keyFile(dir.path, 'open.key', `${HEX_KEY}\n`, mode);
      const err = keyError(dir.path, 'open.key');
      const shown = mode.toString(8).padStart(4, '0');
      assert.match(
        err.message,
        new RegExp(`is accessible by group or others \\(mode ${shown}\\); a key file must be private$`),
      );
      assert.match(err.hint ?? '', /^chmod 600 ".*open\.key"$/);
    }
  });

  it('refuses a key of the wrong length or format', () => {
    using dir = tempDir();
    const cases: [name: string, content: string | Buffer, message: RegExp][] = [
      ['short-hex.key', `${'ab'.repeat(31)}\n`, /must hold a 256-bit key .*; it has 63 bytes/],
      ['long-hex.key', 'ab'.repeat(33), /must hold a 256-bit key/],
      ['short-b64.key', `${Buffer.alloc(16, 1).toString('base64')}\n`, /must hold a 256-bit key/],
      ['raw-31.key', Buffer.alloc(31, 0), /must hold a 256-bit key .*; it has 31 bytes/],
      ['empty.key', '', /must hold a 256-bit key .*; it has 0 bytes/],
      ['passphrase.key', 'correct horse battery staple 123', /32 printable characters: that is a passphrase/],
      ['big.key', 'x'.repeat(5000), /has 5000 bytes: too large to be a key file$/],
    ];
    for (const [name, content, message] of cases) {
      keyFile(dir.path, name, content);
      assert.match(keyError(dir.path, name).message, message, name);
    }
  });

  it('refuses a directory and a FIFO (without hanging on it)', () => {
    using dir = tempDir();
    mkdirSync(join(dir.path, 'keys'), { mode: 0o700 });
    assert.match(keyError(dir.path, 'keys').message, /is not a regular file$/);
    execFileSync('mkfifo', ['-m', '600', join(dir.path, 'fifo.key')]);
    assert.match(keyError(dir.path, 'fifo.key').message, /is not a regular file$/);
  });

  it(
    'refuses an unreadable file',
    { skip: process.getuid?.() === 0 ? 'running as root: chmod 000 does not stop root from reading' : false },
    () => {
      using dir = tempDir();
      keyFile(dir.path, 'locked.key', `${HEX_KEY}\n`, 0o000);
      assert.match(keyError(dir.path, 'locked.key').message, /cannot be read \(EACCES\)$/);
    },
  );

  it('the CLI prints the error with the fix and exits 2, whatever the command', async () => {
    using dir = tempDir();
    keyFile(dir.path, 'snapshot.key', `${HEX_KEY}\n`, 0o644);
    writeFileSync(join(dir.path, 'app.db'), '');
    const path = writeConfig(
      dir.path,
      'db_path = "app.db"\n[snapshot]\nencryption_key_file = "snapshot.key"\n',
    );
    const cli = spawnCli(['-config', path, '-cleanup'], { cwd: dir.path });
    const code = await cli.exited;
    const text = cli.output.join('\n');
    assert.equal(code, 2, text);
    assert.match(
      text,
      /^Error: config key "snapshot\.encryption_key_file": ".*snapshot\.key" is accessible by group or others/m,
    );
    assert.match(text, /^Try: chmod 600 /m);
  });
});
