/**
 * Command-line parsing. Accepts HarmonyLite's Go-style flags (`-config x`,
 * `-config=x`) and GNU style (`--config x`, `--config=x`); booleans as `-cleanup`
 * or `-cleanup=false`, never with a separate value (as in Go's flag package).
 * Every usage error is a ConfigError with a hint, so the CLI exits 2.
 */
import { ConfigError } from '../config/config-error.ts';

export interface CliArgs {
  /** Config file; "config.toml" in the working directory when not given, as in HarmonyLite. */
  readonly config: string;
  /** Overrides the config file's node_id. */
  readonly nodeId?: number;
  /** Remove every trigger and table of ours from the database, then exit. */
  readonly cleanup: boolean;
  /** With -cleanup: go on even though changes are not yet published (they are dropped). */
  readonly force: boolean;
  /** Take and upload a snapshot (bypassing the leader lease), then exit. */
  readonly saveSnapshot: boolean;
  /** Cluster listen address "host:port" of the embedded nats-server. */
  readonly clusterAddr?: string;
  /** Cluster routes (nats://host:port) of the embedded nats-server. */
  readonly clusterPeers?: readonly string[];
  /** Leaf-node remotes of the embedded nats-server. */
  readonly leafServers?: readonly string[];
  readonly version: boolean;
  readonly help: boolean;
  /** (ours) Print the node's replication status, then exit. */
  readonly status: boolean;
  /** (ours) Move the message holding this shard to the dead letters, then exit. */
  readonly deadLetterStuck?: number;
  /** Print this node's schema hash and watched tables, then exit. */
  readonly schemaStatus: boolean;
  /** Print every node's schema hash, grouped, then exit. */
  readonly schemaStatusCluster: boolean;
  /** Publish this SQL file as a replicated migration, then exit. */
  readonly migrate?: string;
  /** Record this migration as done on this node without running it, then exit. */
  readonly migrateResolved?: number;
  /** Serve CPU profiles and heap snapshots over HTTP on this address "host:port" while the node runs. */
  readonly pprof?: string;
  /** Compare every running node's replicated state, print what differs, then exit. */
  readonly verify: boolean;
  /** With -verify: comma-separated globs of the tables to compare. */
  readonly tables?: string;
  /** With -verify: make diverged keys converge. */
  readonly repair: boolean;
  /** Wait until this node's changes up to this global change id (or "last") are on other nodes, then exit. */
  readonly waitReplicated?: string;
  /** With -wait-replicated: all, quorum or a number of nodes. */
  readonly nodes?: string;
  /** With -wait-replicated: how long to wait, e.g. 5s. */
  readonly timeout?: string;
}

type FlagKind = 'boolean' | 'string' | 'unsigned' | 'host-port' | 'route-urls' | 'leaf-urls';

interface FlagSpec {
  readonly name: string;
  readonly kind: FlagKind;
  /** The value's placeholder in the usage text. */
  readonly value?: string;
  readonly help: string;
}

const FLAGS = [
  { name: 'config', kind: 'string', value: 'FILE', help: 'config file (default: config.toml)' },
  { name: 'node-id', kind: 'unsigned', value: 'N', help: "this node's id, overriding node_id of the config" },
  { name: 'cleanup', kind: 'boolean', help: 'remove all triggers and change-log tables of ours, then exit' },
  {
    name: 'force',
    kind: 'boolean',
    help: 'with -cleanup: go on although changes are not yet published (dropping them)',
  },
  { name: 'save-snapshot', kind: 'boolean', help: 'take and upload a snapshot now, then exit' },
  {
    name: 'cluster-addr',
    kind: 'host-port',
    value: 'HOST:PORT',
    help: 'cluster listen address of the embedded nats-server',
  },
  {
    name: 'cluster-peers',
    kind: 'route-urls',
    value: 'URLS',
    help: 'cluster routes of the embedded nats-server: nats://host:port,...',
  },
  {
    name: 'leaf-servers',
    kind: 'leaf-urls',
    value: 'URLS',
    help: 'leaf-node remotes of the embedded nats-server: nats://host:port,...',
  },
  { name: 'status', kind: 'boolean', help: "print this node's replication status, then exit" },
  {
    name: 'dead-letter-stuck',
    kind: 'unsigned',
    value: 'SHARD',
    help: 'move the message holding SHARD to the dead letters, then exit',
  },
  { name: 'schema-status', kind: 'boolean', help: "print this node's schema hash and tables, then exit" },
  {
    name: 'schema-status-cluster',
    kind: 'boolean',
    help: "print every node's schema hash, then exit (1 when they differ)",
  },
  {
    name: 'migrate',
    kind: 'string',
    value: 'FILE',
    help: 'publish FILE.sql as a migration every node applies in order, then exit',
  },
  {
    name: 'migrate-resolved',
    kind: 'unsigned',
    value: 'SEQ',
    help: 'mark migration SEQ done on this node without running it, then exit',
  },
  {
    name: 'pprof',
    kind: 'host-port',
    value: 'HOST:PORT',
    help: 'serve CPU profiles and heap snapshots on http://HOST:PORT/debug/pprof/',
  },
  {
    name: 'verify',
    kind: 'boolean',
    help: "compare every running node's replicated state, print what differs, then exit (1 when it does)",
  },
  {
    name: 'tables',
    kind: 'string',
    value: 'GLOBS',
    help: 'with -verify: only these tables (comma-separated globs)',
  },
  {
    name: 'repair',
    kind: 'boolean',
    help: 'with -verify: make the keys that differ converge, print what changed',
  },
  {
    name: 'wait-replicated',
    kind: 'string',
    value: 'ID',
    help: 'wait until changes up to this global change id (or "last") are on the other nodes, then exit (1 on timeout)',
  },
  {
    name: 'nodes',
    kind: 'string',
    value: 'N',
    help: 'with -wait-replicated: all (default), quorum or a number of nodes',
  },
  {
    name: 'timeout',
    kind: 'string',
    value: 'DURATION',
    help: 'with -wait-replicated: how long to wait (default 5s)',
  },
  { name: 'version', kind: 'boolean', help: 'print the version, then exit' },
  { name: 'help', kind: 'boolean', help: 'print this help, then exit (also -h)' },
] as const satisfies readonly FlagSpec[];

type FlagName = (typeof FLAGS)[number]['name'];

const ALIASES: ReadonlyMap<string, FlagName> = new Map([['h', 'help']]);

/** Flags that each select a one-shot command instead of running the node. */
const COMMANDS = [
  'cleanup',
  'save-snapshot',
  'status',
  'dead-letter-stuck',
  'schema-status',
  'schema-status-cluster',
  'migrate',
  'migrate-resolved',
  'verify',
  'wait-replicated',
] as const satisfies readonly FlagName[];

const HELP_HINT = 'run harmonylite -help';

function flagUsage(spec: FlagSpec): string {
  const left = `  -${spec.name}${spec.value === undefined ? '' : ` ${spec.value}`}`;
  return `${left.padEnd(28)}${spec.help}`;
}

/** The -help text: every flag, one line each. */
export const USAGE: string = [
  'Usage: harmonylite [flags]',
  '',
  'Runs a HarmonyLite node (until SIGINT/SIGTERM), or one of the commands below.',
  'Flags are written -flag value, -flag=value, --flag value or --flag=value;',
  'boolean flags as -flag or -flag=false.',
  '',
  'Flags:',
  ...FLAGS.map(flagUsage),
  '',
].join('\n');

/** The spellings Go's strconv.ParseBool accepts, so HarmonyLite command lines keep working. */
const BOOLEAN_VALUES: ReadonlyMap<string, boolean> = new Map([
  ...['1', 't', 'T', 'true', 'TRUE', 'True'].map((v) => [v, true] as const),
  ...['0', 'f', 'F', 'false', 'FALSE', 'False'].map((v) => [v, false] as const),
]);

function usageError(message: string, hint = HELP_HINT): ConfigError {
  return new ConfigError(message, { hint });
}

function parseUnsigned(flag: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) {
    throw usageError(`flag "${flag}" must be an unsigned integer, got "${value}"`);
  }
  return n;
}

function isValidPort(port: string): boolean {
  return /^\d{1,5}$/.test(port) && Number(port) <= 65535;
}

function parseHostPort(flag: string, value: string): string {
  const m = /^(\[[^\]]+\]|[^:[\]\s]*):([^:]*)$/.exec(value);
  if (m?.[2] === undefined || !isValidPort(m[2])) {
    throw usageError(`flag "${flag}" must be an address host:port, got "${value}"`);
  }
  return value;
}

/** Splits a comma-separated URL list; each URL needs a host, a port and one of `schemes`. */
function parseUrls(flag: string, value: string, schemes: readonly string[]): string[] {
  const expected = `a comma-separated list of ${schemes.map((s) => `${s}//host:port`).join(' or ')} URLs`;
  return value.split(',').map((raw) => {
    const item = raw.trim();
    let url: URL | undefined;
    try {
      url = new URL(item);
    } catch {
      url = undefined;
    }
    if (url === undefined || !schemes.includes(url.protocol) || url.hostname === '' || url.port === '') {
      throw usageError(`flag "${flag}" must be ${expected}, got "${item}"`);
    }
    return item;
  });
}

/**
 * Parses the arguments after the program name (`process.argv.slice(2)`).
 * A repeated flag keeps its last value, as Go's flag package does.
 */
export function parseArgs(argv: readonly string[]): CliArgs {
  const given = new Map<FlagName, { flag: string; value: string | boolean }>();
  let lastBoolean: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const previousBoolean = lastBoolean;
    lastBoolean = undefined;
    if (arg === '--') {
      // Go's flag package stops at "--"; what follows would be arguments, and there are none.
      const rest = argv[i + 1];
      if (rest !== undefined)
        throw usageError(`unexpected argument "${rest}": harmonylite takes no arguments`);
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      const hint =
        previousBoolean !== undefined && BOOLEAN_VALUES.has(arg)
          ? `write ${previousBoolean}=${arg}: a boolean flag takes its value after "="`
          : HELP_HINT;
      throw usageError(`unexpected argument "${arg}": harmonylite takes no arguments`, hint);
    }
    const body = arg.startsWith('--') ? arg.slice(2) : arg.slice(1);
    const eq = body.indexOf('=');
    const bare = eq < 0 ? body : body.slice(0, eq);
    const inline = eq < 0 ? undefined : body.slice(eq + 1);
    const flag = arg.slice(0, arg.length - body.length) + bare;
    const name = ALIASES.get(bare) ?? FLAGS.find((f) => f.name === bare)?.name;
    const spec = FLAGS.find((f) => f.name === name);
    if (name === undefined || spec === undefined) throw usageError(`unknown flag "${flag}"`);
    if (spec.kind === 'boolean') {
      const value = inline === undefined ? true : BOOLEAN_VALUES.get(inline);
      if (value === undefined)
        throw usageError(`flag "${flag}" must be true or false, got "${inline ?? ''}"`);
      given.set(name, { flag, value });
      if (inline === undefined) lastBoolean = flag;
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[i + 1];
      // "-config -cleanup" is a forgotten value, not a file named "-cleanup"; "-node-id -1" is a bad value.
      if (next !== undefined && next !== '--' && !/^--?[A-Za-z]/.test(next)) {
        value = next;
        i++;
      }
    }
    if (value === undefined || value === '') throw usageError(`flag "${flag}" needs a value`);
    given.set(name, { flag, value });
  }

  const commands = COMMANDS.filter((c) => given.has(c));
  const help = given.get('help')?.value === true;
  const version = given.get('version')?.value === true;
  if (commands.length > 1 && !help && !version) {
    const [a, b] = commands.map((c) => given.get(c)?.flag ?? c);
    throw usageError(`flags "${a ?? ''}" and "${b ?? ''}" cannot be combined: run one command at a time`);
  }

  const str = (name: FlagName): string | undefined => {
    const v = given.get(name)?.value;
    return typeof v === 'string' ? v : undefined;
  };
  const bool = (name: FlagName): boolean => given.get(name)?.value === true;
  const flagOf = (name: FlagName): string => given.get(name)?.flag ?? `-${name}`;
  if (bool('force') && !bool('cleanup') && !help && !version)
    throw usageError(`flag "${flagOf('force')}" only goes with -cleanup`);

  const nodeId = str('node-id');
  const clusterAddr = str('cluster-addr');
  const clusterPeers = str('cluster-peers');
  const leafServers = str('leaf-servers');
  const deadLetterStuck = str('dead-letter-stuck');
  const pprof = str('pprof');
  const migrate = str('migrate');
  const migrateResolved = str('migrate-resolved');
  const tables = str('tables');
  for (const only of ['tables', 'repair'] as const)
    if (given.has(only) && !bool('verify') && !help && !version)
      throw usageError(`flag "${flagOf(only)}" needs -verify`);
  for (const only of ['nodes', 'timeout'] as const)
    if (given.has(only) && !given.has('wait-replicated') && !help && !version)
      throw usageError(`flag "${flagOf(only)}" needs -wait-replicated`);
  const waitReplicated = str('wait-replicated');
  const nodes = str('nodes');
  const timeout = str('timeout');
  return {
    config: str('config') ?? 'config.toml',
    ...(nodeId === undefined ? {} : { nodeId: parseUnsigned(flagOf('node-id'), nodeId) }),
    cleanup: bool('cleanup'),
    force: bool('force'),
    saveSnapshot: bool('save-snapshot'),
    ...(clusterAddr === undefined ? {} : { clusterAddr: parseHostPort(flagOf('cluster-addr'), clusterAddr) }),
    ...(clusterPeers === undefined
      ? {}
      : { clusterPeers: parseUrls(flagOf('cluster-peers'), clusterPeers, ['nats:', 'nats-route:']) }),
    ...(leafServers === undefined
      ? {}
      : {
          leafServers: parseUrls(flagOf('leaf-servers'), leafServers, [
            'nats:',
            'nats-leaf:',
            'tls:',
            'ws:',
            'wss:',
          ]),
        }),
    version,
    help,
    status: bool('status'),
    ...(deadLetterStuck === undefined
      ? {}
      : { deadLetterStuck: parseUnsigned(flagOf('dead-letter-stuck'), deadLetterStuck) }),
    schemaStatus: bool('schema-status'),
    schemaStatusCluster: bool('schema-status-cluster'),
    ...(pprof === undefined ? {} : { pprof: parseHostPort(flagOf('pprof'), pprof) }),
    ...(migrate === undefined ? {} : { migrate }),
    ...(migrateResolved === undefined
      ? {}
      : { migrateResolved: parseUnsigned(flagOf('migrate-resolved'), migrateResolved) }),
    verify: bool('verify'),
    ...(tables === undefined ? {} : { tables }),
    repair: bool('repair'),
    ...(waitReplicated === undefined ? {} : { waitReplicated }),
    ...(nodes === undefined ? {} : { nodes }),
    ...(timeout === undefined ? {} : { timeout }),
  };
}
