import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import { applyConfigAliases } from './config-aliases.ts';
import { ConfigError } from './config-error.ts';
import { readKeyFile, SNAPSHOT_KEY_CONFIG } from './key-file.ts';
import { parseTrustedKeyEntry } from './trusted-key-entry.ts';
import { shownPath } from './private-file.ts';
import { checkSecretFiles } from './secret-files.ts';
import { defaultConfig, LOG_FORMATS, SNAPSHOT_STORES, type Config } from './config.ts';

type Rule = (value: unknown) => string | undefined;

const isFiniteNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const positive: Rule = (v) => (isFiniteNumber(v) && v > 0 ? undefined : 'a number greater than 0');
const nonNegative: Rule = (v) => (isFiniteNumber(v) && v >= 0 ? undefined : 'a number >= 0');
const integer =
  (inner: Rule): Rule =>
  (v) =>
    typeof v === 'number' && !Number.isSafeInteger(v) ? 'a whole number' : inner(v);
const validPort = (port: string): boolean => Number(port) <= 65535;
const oneOf =
  (values: readonly string[]): Rule =>
  (v) =>
    values.includes(v as string) ? undefined : `one of ${values.map((x) => `"${x}"`).join(', ')}`;
/** "host:port", "[ipv6]:port" or ":port" (all interfaces). */
const hostPort: Rule = (v) => {
  const m = typeof v === 'string' ? /^(?:\[[^\]]+\]|[^:[\]\s]*):(\d{1,5})$/.exec(v) : null;
  return m?.[1] !== undefined && validPort(m[1]) ? undefined : 'an address "host:port" or ":port"';
};
/** The embedded server's listen address: also port -1, nats-server's "a random port" (HarmonyLite's default ":-1"). */
const listenAddress: Rule = (v) =>
  v === '' || (typeof v === 'string' && hostPort(v.replace(/:-1$/, ':0')) === undefined)
    ? undefined
    : 'an address "host:port" or ":port" (port -1 = a random port)';
const prefix: Rule = (v) =>
  typeof v === 'string' && /^[A-Za-z0-9_-]+$/.test(v)
    ? undefined
    : 'a non-empty name of letters, digits, "-" and "_" (it names NATS streams and subjects)';

/** Constraints beyond the type implied by the default value. */
const RULES: Record<string, Rule> = {
  node_id: integer(nonNegative),
  scan_max_changes: integer(positive),
  cleanup_interval: integer(positive),
  sleep_timeout: integer(nonNegative),
  polling_interval: integer(nonNegative),
  busy_timeout: integer(nonNegative),
  wal_checkpoint_bytes: integer(positive),
  schema_retry_interval: integer(positive),
  max_clock_skew: integer(positive),
  conflict_log_retention: integer(positive),
  conflict_log_max_rows: integer(nonNegative),
  'replication_log.shards': integer(positive),
  'replication_log.max_entries': integer(positive),
  'replication_log.replicas': integer((v) =>
    typeof v === 'number' && v >= 1 && v <= 5 ? undefined : '1 to 5',
  ),
  'replication_log.max_batch_changes': integer(positive),
  'replication_log.max_batch_bytes': integer(nonNegative),
  'replication_log.duplicate_window': integer(positive),
  'replication_log.worker_heap_mb': integer(nonNegative),
  'replication_log.max_hold': integer(nonNegative),
  'replication_log.trusted_keys': (v) => {
    const entries = v as string[];
    for (const [i, e] of entries.entries()) {
      const k = parseTrustedKeyEntry(e);
      if (typeof k === 'string') return `a list of trusted keys; entry ${i} (${showPath(e)}) is not ${k}`;
    }
    return undefined;
  },
  'nats.subject_prefix': prefix,
  'nats.stream_prefix': prefix,
  'nats.connect_retries': integer(nonNegative),
  'nats.reconnect_wait_seconds': positive,
  'nats.bind_address': listenAddress,
  'nats.publish_timeout': integer(positive),
  'nats.max_payload': integer((v) =>
    typeof v === 'number' && v >= 0 && v <= 64 * 1024 * 1024 ? undefined : '0 to 64 MiB (67108864)',
  ),
  'snapshot.interval': integer(nonNegative),
  'verify.interval': integer(nonNegative),
  'snapshot.leader_ttl': integer(positive),
  'snapshot.store': oneOf(SNAPSHOT_STORES),
  'snapshot.keep': integer(positive),
  'snapshot.nats.replicas': integer((v) =>
    typeof v === 'number' && v >= 1 && v <= 5 ? undefined : '1 to 5',
  ),
  'logging.format': oneOf(LOG_FORMATS),
  'prometheus.bind': hostPort,
  'health_check.bind': hostPort,
  'health_check.path': (v) =>
    typeof v === 'string' && v.startsWith('/') ? undefined : 'a path starting with "/"',
};

function typeName(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  if (v instanceof Date) return 'a date';
  if (typeof v === 'object') return 'a table';
  if (typeof v === 'number') return 'a number';
  if (typeof v === 'string') return 'a string';
  if (typeof v === 'boolean') return 'a boolean';
  return typeof v;
}

/** The type of `v`, with its value when it is short enough to quote. */
function describe(v: unknown): string {
  const type = typeName(v);
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') {
    const text = JSON.stringify(v);
    if (text !== undefined && text.length <= 60) return `${type} (${text})`;
  }
  return type;
}

/** Checks `input` against the shape of `defaults`, key by key, into `target`. */
function merge(
  target: Record<string, unknown>,
  defaults: Record<string, unknown>,
  input: unknown,
  path: string,
): void {
  if (typeof input !== 'object' || input === null || Array.isArray(input)) {
    throw new ConfigError(`config key "${path}" must be a table, got ${describe(input)}`);
  }
  for (const [key, value] of Object.entries(input as Record<string, unknown>)) {
    const full = path === '' ? key : `${path}.${key}`;
    // hasOwn, not `in`: keys such as "constructor" or "__proto__" are unknown too.
    if (!Object.hasOwn(defaults, key)) {
      throw new ConfigError(`unknown config key "${full}"`, {
        hint: 'check the spelling against config.example.toml',
      });
    }
    const def = defaults[key];
    if (typeof def === 'object' && def !== null && !Array.isArray(def)) {
      merge(target[key] as Record<string, unknown>, def as Record<string, unknown>, value, full);
      continue;
    }
    let v = value;
    // TOML integers may be given where we keep floats and vice versa; both are numbers here.
    if (typeof v === 'bigint') v = Number(v);
    if (Array.isArray(def)) {
      if (!Array.isArray(v)) {
        throw new ConfigError(`config key "${full}" must be an array of strings, got ${describe(v)}`);
      }
      const bad = (v as unknown[]).findIndex((x) => typeof x !== 'string');
      if (bad >= 0) {
        throw new ConfigError(
          `config key "${full}" must be an array of strings, got ${describe((v as unknown[])[bad])} at index ${bad}`,
        );
      }
    } else if (typeof v !== typeof def) {
      throw new ConfigError(`config key "${full}" must be ${typeName(def)}, got ${describe(v)}`);
    }
    const rule = RULES[full];
    const expected = rule?.(v);
    if (expected !== undefined) {
      throw new ConfigError(`config key "${full}" must be ${expected}, got ${JSON.stringify(v)}`);
    }
    target[key] = v;
  }
}

/**
 * Keys holding paths. Relative ones resolve against the working directory, as in
 * HarmonyLite (its run scripts and tests start nodes from the repository root with
 * configs elsewhere). `reads`: a file or directory that must exist already.
 */
const PATH_KEYS: readonly { readonly key: string; readonly reads: boolean }[] = [
  { key: 'db_path', reads: true },
  { key: 'seq_map_path', reads: false },
  { key: 'nats.server_config', reads: true },
  { key: 'nats.seed_file', reads: true },
  { key: 'nats.creds_file', reads: true },
  { key: 'nats.ca_file', reads: true },
  { key: 'nats.cert_file', reads: true },
  { key: 'nats.key_file', reads: true },
  { key: 'nats.route_cert_file', reads: true },
  { key: 'nats.route_key_file', reads: true },
  { key: 'nats.route_ca_file', reads: true },
  { key: 'nats.store_dir', reads: false },
  { key: 'nats.server_binary', reads: true },
  { key: 'snapshot.temp_dir', reads: false },
  { key: 'snapshot.encryption_key_file', reads: true },
  { key: 'snapshot.local.path', reads: false },
  { key: 'snapshot.sftp.known_hosts', reads: true },
  { key: 'snapshot.sftp.private_key', reads: true },
];

function pathParent(config: Config, key: string): [Record<string, string>, string] {
  const parts = key.split('.');
  const last = parts.pop() ?? '';
  const parent = parts.reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], config);
  return [parent as Record<string, string>, last];
}

/**
 * Parses TOML text into a validated Config. Relative paths resolve against `baseDir`
 * (the working directory). With `configDir`, a relative path to an existing file
 * that is missing there but exists next to the config file is an error saying so.
 */
export function parseConfig(text: string, baseDir: string, source = 'config', configDir?: string): Config {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    const where = err instanceof TomlError ? ` (line ${err.line}, column ${err.column})` : '';
    const first = String((err as Error).message).split('\n')[0];
    throw new ConfigError(`cannot parse ${source}${where}: ${first}`, { cause: err });
  }
  applyConfigAliases(raw);
  const config = defaultConfig();
  merge(
    config as unknown as Record<string, unknown>,
    defaultConfig() as unknown as Record<string, unknown>,
    raw,
    '',
  );
  for (const { key, reads } of PATH_KEYS) {
    const [parent, name] = pathParent(config, key);
    const value = parent[name] ?? '';
    if (value === '' || isAbsolute(value)) continue;
    // A bare command name is looked up in PATH; only a path with a "/" is a path.
    if (key === 'nats.server_binary' && !value.includes('/')) continue;
    const resolved = resolve(baseDir, value);
    if (reads && configDir !== undefined && !existsSync(resolved)) {
      const beside = resolve(configDir, value);
      if (beside !== resolved && existsSync(beside)) {
        throw new ConfigError(
          `config key "${key}": ${showPath(value)} does not exist in the working directory ${showPath(baseDir)} ` +
            `(relative paths resolve against the working directory, as in HarmonyLite), ` +
            `but ${showPath(beside)} next to the config file does`,
          { hint: `run harmonylite from ${showPath(configDir)}, or make ${key} absolute` },
        );
      }
    }
    parent[name] = resolved;
  }
  const n = config.nats;
  if ((n.cert_file === '') !== (n.key_file === '')) {
    throw new ConfigError('config keys "nats.cert_file" and "nats.key_file" must be given together');
  }
  if ((n.route_cert_file === '') !== (n.route_key_file === '')) {
    throw new ConfigError(
      'config keys "nats.route_cert_file" and "nats.route_key_file" must be given together',
    );
  }
  if (n.route_ca_file !== '' && n.route_cert_file === '') {
    throw new ConfigError(
      'config key "nats.route_ca_file" needs "nats.route_cert_file" and "nats.route_key_file"',
    );
  }
  // Half a user/password pair protects nothing, and was accepted silently.
  if ((n.user_name === '') !== (n.user_password === '')) {
    throw new ConfigError('config keys "nats.user_name" and "nats.user_password" must be given together');
  }
  return config;
}

/** A path as it appears in messages: quoted and escaped (no raw control characters reach a terminal), at most 200 characters. */
export function showPath(path: string): string {
  return shownPath(path);
}

/**
 * Reads and validates a config file; a missing file is an error (HarmonyLite
 * silently used defaults). Files the config names that every command relies on
 * are checked here too: the snapshot key file (missing, unreadable, not
 * private, not a 256-bit key: `readKeyFile`).
 */
export function loadConfig(path: string, cwd: string = process.cwd()): Config {
  const abs = resolve(cwd, path);
  let text: string;
  try {
    const st = statSync(abs);
    if (st.isDirectory()) {
      throw new ConfigError(`config file ${showPath(abs)} is a directory, expected a TOML file`, {
        hint: 'pass the file itself: -config DIR/config.toml',
      });
    }
    // FIFOs stay allowed: `-config <(envsubst < tmpl.toml)` is a process substitution.
    text = readFileSync(abs, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new ConfigError(`config file ${showPath(abs)} does not exist`, {
        hint: 'copy config.example.toml and pass it with -config FILE',
        cause: err,
      });
    }
    throw new ConfigError(`cannot read config file ${showPath(abs)}: ${code ?? (err as Error).message}`, {
      cause: err,
    });
  }
  const config = parseConfig(text, cwd, showPath(abs), dirname(abs));
  if (config.snapshot.encryption_key_file !== '')
    readKeyFile(config.snapshot.encryption_key_file, SNAPSHOT_KEY_CONFIG);
  checkSecretFiles(config);
  return config;
}

/** Checks what a running node needs beyond a well-formed file: a database to replicate. */
export function requireDatabase(config: Config): void {
  if (config.db_path === '') {
    throw new ConfigError('config key "db_path" is required', {
      hint: 'set db_path = "/path/to/app.db" in the config file',
    });
  }
  try {
    if (!statSync(config.db_path).isFile()) {
      throw new ConfigError(`config key "db_path" must name a file, ${showPath(config.db_path)} is not one`, {
        hint: 'set db_path to the SQLite database file itself',
      });
    }
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`database ${showPath(config.db_path)} does not exist`, {
      hint: `create it first (for example: sqlite3 ${showPath(config.db_path)} "VACUUM") or fix db_path`,
      cause: err,
    });
  }
}
