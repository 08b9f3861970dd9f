/**
 * Test nodes: in-process HarmonyLiteNode instances or real CLI processes, on
 * real SQLite files, against real nats-server processes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { stringify as toToml } from 'smol-toml';
import { defaultConfig, type Config } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { HarmonyLiteNode } from '../../src/node/harmonylite-node.ts';
import { waitFor } from './wait-for.ts';

export const REPO_ROOT = new URL('../..', import.meta.url).pathname;
export const CLI_ENTRY = join(REPO_ROOT, 'src/cli/main.ts');
/** tsx's loader by URL: `--import tsx` would look for the package in the child's working directory. */
export const TSX_LOADER = import.meta.resolve('tsx');

/** Log records a node wrote, parsed (JSON format). */
export class LogCapture extends Writable {
  readonly records: Record<string, unknown>[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim() === '') continue;
      try {
        this.records.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        this.records.push({ msg: line });
      }
    }
    cb();
  }
  messages(): string[] {
    return this.records.map((r) => String(r.msg));
  }
  has(msg: string | RegExp): boolean {
    return this.records.some((r) =>
      typeof msg === 'string' ? String(r.msg).includes(msg) : msg.test(String(r.msg)),
    );
  }
}

export function createDatabase(path: string, schema: string): void {
  const db = new Database(path);
  db.exec(schema);
  db.close();
}

export interface TestNodeOptions {
  readonly dir: string;
  readonly nodeId: number;
  readonly urls: readonly string[];
  /** SQL run on a new database before the node starts (skipped when the file exists and `schema` is undefined). */
  readonly schema?: string;
  readonly configure?: (config: Config) => void;
  readonly verbose?: boolean;
  /** The node's clock for batch seqs (ms since the epoch); default Date.now. */
  readonly clock?: () => number;
}

export interface TestNode {
  readonly node: HarmonyLiteNode;
  readonly dbPath: string;
  readonly config: Config;
  readonly logs: LogCapture;
  close(): Promise<void>;
}

export function nodeConfig(options: TestNodeOptions): Config {
  const config = defaultConfig();
  config.db_path = join(options.dir, `node-${options.nodeId}.db`);
  config.node_id = options.nodeId;
  config.nats.urls = [...options.urls];
  config.logging.format = 'json';
  config.cleanup_interval = 60_000;
  config.schema_retry_interval = 500;
  options.configure?.(config);
  return config;
}

/** Starts an in-process node on `<dir>/node-<id>.db`. */
export async function startNode(options: TestNodeOptions): Promise<TestNode> {
  const config = nodeConfig(options);
  if (options.schema !== undefined) createDatabase(config.db_path, options.schema);
  const logs = new LogCapture();
  const logger = createLogger({
    verbose: options.verbose ?? false,
    format: 'json',
    nodeId: options.nodeId,
    destination: logs,
  });
  const node = new HarmonyLiteNode({
    config,
    logger,
    ...(options.clock !== undefined ? { clock: options.clock } : {}),
  });
  try {
    await node.open();
  } catch (err) {
    // As the CLI does: what the failed start opened (database, NATS, timers) must not keep the test alive.
    await node.close().catch(() => undefined);
    throw err;
  }
  let closed = false;
  return {
    node,
    dbPath: config.db_path,
    config,
    logs,
    async close() {
      if (closed) return;
      closed = true;
      await node.close();
    },
  };
}

/** Writes a config file for a CLI node and returns its path. */
export function writeConfigFile(config: Config, path: string): string {
  writeFileSync(path, toToml(config as unknown as Record<string, unknown>), { mode: 0o600 });
  return path;
}

export interface CliNode {
  readonly child: ChildProcess;
  readonly output: string[];
  /** Resolves with the exit code (null when killed by a signal). */
  readonly exited: Promise<number | null>;
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): void;
}

/** Runs `harmonylite` as a child process (through tsx), capturing stdout and stderr lines. */
export function spawnCli(
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): CliNode {
  const child = spawn(process.execPath, ['--import', TSX_LOADER, CLI_ENTRY, ...args], {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const output: string[] = [];
  const collect = (chunk: Buffer) =>
    output.push(
      ...chunk
        .toString('utf8')
        .split('\n')
        .filter((l) => l !== ''),
    );
  child.stdout!.on('data', collect);
  child.stderr!.on('data', collect);
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    output,
    exited,
    waitForOutput: (pattern, timeoutMs = 30_000) =>
      waitFor(`output matching ${pattern}`, () => output.find((l) => pattern.test(l)), {
        timeoutMs,
        seen: () => output.slice(-10),
      }),
    kill: (signal = 'SIGTERM') => {
      child.kill(signal);
    },
  };
}

/** Every row of a table, ordered by all columns, with each value's SQLite type: equal means identical. */
export function tableContents(dbPath: string, table: string): string {
  const db = new Database(dbPath, { readonly: true });
  try {
    db.defaultSafeIntegers(true);
    const cols = (
      db.prepare(`PRAGMA table_info("${table.replaceAll('"', '""')}")`).all() as { name: string }[]
    ).map((c) => c.name);
    const q = (c: string) => `"${c.replaceAll('"', '""')}"`;
    const select = cols.map((c) => `typeof(${q(c)}), quote(${q(c)})`).join(', ');
    const rows = db
      .prepare(`SELECT ${select} FROM ${q(table)} ORDER BY ${cols.map(q).join(', ')}`)
      .raw(true)
      .all();
    return JSON.stringify(rows, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
  } finally {
    db.close();
  }
}

/** Waits until every database holds identical contents of every listed table. */
export async function waitConverged(
  dbPaths: readonly string[],
  tables: readonly string[],
  timeoutMs = 60_000,
): Promise<void> {
  let last: string[] = [];
  await waitFor(
    `identical ${tables.join(', ')} on ${dbPaths.length} nodes`,
    () => {
      last = dbPaths.map((p) => tables.map((t) => tableContents(p, t)).join('|'));
      return last.every((c) => c === last[0]);
    },
    { timeoutMs, intervalMs: 100, seen: () => last.map((c) => c.slice(0, 300)) },
  );
}

/** Opens an application connection with default settings (what any app would do). */
export function appConnection(dbPath: string): Database.Database {
  return new Database(dbPath);
}
