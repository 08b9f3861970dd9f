/**
 * The system under chaos: a 3-server nats JetStream cluster, and three
 * HarmonyLite CLI nodes (R3 streams) that reach every server through their
 * own TCP proxies (so a node can be partitioned), keep snapshots in one local
 * store on a `SnapshotDisk`, and log JSON. A node process that exits without
 * the chaos suite stopping it is recorded as a crash.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { GLOBAL_LOG } from '../../src/cdc/names.ts';
import { readPositions } from '../../src/snapshot/snapshot-restorer.ts';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  writeConfigFile,
  type CliNode,
} from '../helpers/node-harness.ts';
import { startNatsCluster, type TestNatsCluster } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { SnapshotDisk } from './snapshot-disk.ts';
import { TcpProxy } from './tcp-proxy.ts';

export const CHAOS_SCHEMA = `
CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL, writer INTEGER NOT NULL);
CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v BLOB, writer INTEGER NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID;
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, v TEXT NOT NULL, writer INTEGER NOT NULL);
`;
export const CHAOS_TABLES = ['kv', 'pairs', 'users'] as const;
export const STREAM_PREFIX = 'harmonylite-changes';

export interface ChaosNode {
  readonly id: number;
  readonly dbPath: string;
  readonly configPath: string;
  readonly proxies: TcpProxy[];
  /** The running process; undefined while stopped. */
  cli: CliNode | undefined;
  /** Every process this node ran, oldest first: together their output is the node's log. */
  readonly processes: CliNode[];
  stoppedByUs: boolean;
  /** Set by a fault: labels the writes the application makes on this node meanwhile. */
  writeLabel: string | undefined;
}

export interface ChaosClusterOptions {
  readonly shards: number;
  /** `[snapshot] interval` of every node, ms. */
  readonly snapshotIntervalMs: number;
  /** Size of each snapshot tmpfs. */
  readonly snapshotDiskBytes: number;
}

/** A parsed JSON log line of a node, with the process it came from (1 = first). */
export type LogRecord = Record<string, unknown> & { readonly process: number };

export class ChaosCluster {
  readonly nodes: ChaosNode[] = [];
  readonly crashes: string[] = [];
  readonly #options: ChaosClusterOptions;
  readonly #dir = tempDir('hl-chaos-');
  readonly #proxies: TcpProxy[] = [];
  #nats: TestNatsCluster | undefined;
  #disk: SnapshotDisk | undefined;

  constructor(options: ChaosClusterOptions) {
    this.#options = options;
  }

  get nats(): TestNatsCluster {
    if (this.#nats === undefined) throw new Error('the chaos cluster is not open');
    return this.#nats;
  }

  get disk(): SnapshotDisk {
    if (this.#disk === undefined) throw new Error('the chaos cluster is not open');
    return this.#disk;
  }

  /** Starts the servers, the proxies and the three nodes. `close()` undoes a partial open too. */
  async open(): Promise<void> {
    this.#disk = SnapshotDisk.create(this.#dir.path, this.#options.snapshotDiskBytes);
    const disk = this.#disk;
    this.#nats = await startNatsCluster(3);
    const serverPorts = this.#nats.servers.map((s) => Number(new URL(s.url).port));
    for (const id of [1, 2, 3]) {
      const proxies: TcpProxy[] = [];
      for (const port of serverPorts) {
        const p = new TcpProxy(port);
        proxies.push(p);
        this.#proxies.push(p);
        await p.open();
      }
      const config = nodeConfig({
        dir: this.#dir.path,
        nodeId: id,
        urls: proxies.map((p) => p.url),
        configure: (c) => {
          c.replication_log.shards = this.#options.shards;
          c.replication_log.replicas = 3;
          // Large: only the snapshot-restore fault discards history, and only what every running node applied.
          c.replication_log.max_entries = 1_000_000;
          c.nats.publish_timeout = 2000;
          c.nats.reconnect_wait_seconds = 0.25;
          c.schema_retry_interval = 500;
          c.snapshot.enabled = true;
          c.snapshot.interval = this.#options.snapshotIntervalMs;
          c.snapshot.store = 'local';
          c.snapshot.local.path = disk.storeDir;
          c.snapshot.temp_dir = disk.tempDir;
          c.snapshot.keep = 3;
        },
      });
      createDatabase(config.db_path, CHAOS_SCHEMA);
      const configPath = writeConfigFile(config, join(this.#dir.path, `node-${id}.toml`));
      this.nodes.push({
        id,
        dbPath: config.db_path,
        configPath,
        proxies,
        cli: undefined,
        processes: [],
        stoppedByUs: false,
        writeLabel: undefined,
      });
    }
    await Promise.all(this.nodes.map((n) => this.startNode(n)));
  }

  /** Starts the node's process and waits until it is up (after any snapshot restore). */
  async startNode(n: ChaosNode): Promise<CliNode> {
    n.stoppedByUs = false;
    const cli = spawnCli(['-config', n.configPath]);
    n.cli = cli;
    n.processes.push(cli);
    void cli.exited.then((code) => {
      if (!n.stoppedByUs && n.cli === cli)
        this.crashes.push(`node ${n.id} exited with ${code}: ${cli.output.slice(-5).join(' | ')}`);
    });
    let starting = true;
    try {
      await Promise.race([
        cli.waitForOutput(/HarmonyLite node started/, 60_000),
        cli.exited.then((code) => {
          if (starting)
            throw new Error(
              `node ${n.id} exited with ${code} while starting: ${cli.output.slice(-5).join(' | ')}`,
            );
        }),
      ]);
    } finally {
      starting = false;
    }
    return cli;
  }

  /** Stops the node's process with `signal` and waits for it to exit; resolves with its exit code. */
  async stopNode(n: ChaosNode, signal: 'SIGKILL' | 'SIGTERM'): Promise<number | null> {
    const cli = n.cli;
    if (cli === undefined) return null;
    n.stoppedByUs = true;
    cli.kill(signal);
    const code = await cli.exited;
    n.cli = undefined;
    return code;
  }

  /** The nodes whose process runs. */
  running(): ChaosNode[] {
    return this.nodes.filter((n) => n.cli !== undefined);
  }

  /** The node's applied stream position per shard, from its database. */
  positions(n: ChaosNode): Map<number, number> {
    const db = new Database(n.dbPath, { readonly: true, timeout: 10_000 });
    try {
      return readPositions(db);
    } finally {
      db.close();
    }
  }

  /** How many changes the node captured and has not published yet (its global change log). */
  unpublished(n: ChaosNode): number {
    const db = new Database(n.dbPath, { readonly: true, timeout: 10_000 });
    try {
      return db.prepare(`SELECT count(*) FROM "${GLOBAL_LOG}"`).pluck().get() as number;
    } finally {
      db.close();
    }
  }

  /** The node's JSON log records (every process), those at or after `sinceMs` when given. */
  logRecords(n: ChaosNode, sinceMs = 0): LogRecord[] {
    const out: LogRecord[] = [];
    n.processes.forEach((p, i) => {
      for (const line of p.output) {
        if (!line.startsWith('{')) continue;
        try {
          const rec = JSON.parse(line) as Record<string, unknown>;
          if (typeof rec.time === 'number' && rec.time >= sinceMs) out.push({ ...rec, process: i + 1 });
        } catch {
          // A line cut in two by the pipe: not a record.
        }
      }
    });
    return out;
  }

  /** Writes every node's log to a new directory (kept after the run) and returns its path. */
  saveLogs(seed: number): string {
    const dir = join(tmpdir(), `hl-chaos-logs-${seed}-${Date.now()}`);
    mkdirSync(dir, { recursive: true });
    for (const n of this.nodes) {
      const lines = n.processes.flatMap((p, i) => [`--- process ${i + 1} ---`, ...p.output]);
      writeFileSync(join(dir, `node-${n.id}.log`), `${lines.join('\n')}\n`);
    }
    return dir;
  }

  async close(): Promise<void> {
    for (const n of this.nodes) {
      n.stoppedByUs = true;
      n.cli?.kill('SIGCONT');
      n.cli?.kill('SIGKILL');
    }
    for (const p of this.#proxies) await p.close();
    await Promise.all(this.nodes.map((n) => n.cli?.exited));
    for (const s of this.#nats?.servers ?? []) s.kill('SIGCONT');
    await this.#nats?.close();
    this.#disk?.close();
    this.#dir.remove();
  }
}
