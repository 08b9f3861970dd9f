/**
 * A real local cluster for benchmarks: one nats-server (or a 3-server cluster
 * for R3) and HarmonyLite nodes as separate CLI processes (compiled build), so
 * the benchmark's own writer does not share an event loop with any node.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { defaultConfig, type Config } from '../src/config/config.ts';
import { silentLogger } from '../src/logger.ts';
import { EmbeddedNatsServer } from '../src/nats/embedded-server.ts';
import { writeConfigFile } from '../test/helpers/node-harness.ts';

export const ROOT = resolve(new URL('..', import.meta.url).pathname);
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
/**
 * HL_BENCH_SOURCE=1 runs the nodes from the TypeScript source through tsx (the CI
 * smoke run: no build step, and never a stale build). Figures are for the build.
 */
const FROM_SOURCE = process.env.HL_BENCH_SOURCE === '1';
const NODE_ENTRY = FROM_SOURCE ? ['--import', 'tsx', join(ROOT, 'src', 'cli', 'main.ts')] : [CLI];

export interface BenchNode {
  readonly id: number;
  readonly dbPath: string;
  readonly child: ChildProcess;
  /** Peak resident set size seen, bytes (sampled from /proc). */
  peakRssBytes: number;
  /** CPU seconds used (user + system), read from /proc at stop. */
  cpuSeconds: number;
  stop(): Promise<void>;
  kill(): void;
}

export interface BenchClusterOptions {
  readonly nodes: number;
  readonly shards: number;
  readonly replicas: 1 | 3;
  readonly schema: string;
  readonly configure?: (c: Config) => void;
}

function ensureBuilt(): void {
  if (!FROM_SOURCE && !existsSync(CLI)) throw new Error(`${CLI} is missing: run "npm run build" first`);
}

/** Reads a process's RSS (bytes) and CPU seconds from /proc. */
export function processStats(pid: number): { rssBytes: number; cpuSeconds: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rss = /VmRSS:\s+(\d+) kB/.exec(status);
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const ticks = Number(stat[11]) + Number(stat[12]);
    return { rssBytes: rss ? Number(rss[1]) * 1024 : 0, cpuSeconds: ticks / 100 };
  } catch {
    return undefined;
  }
}

export class BenchCluster {
  readonly dir: string;
  readonly servers: EmbeddedNatsServer[] = [];
  readonly nodes: BenchNode[] = [];
  #sampler: NodeJS.Timeout | undefined;

  private constructor(dir: string) {
    this.dir = dir;
  }

  get urls(): string[] {
    return this.servers.map((s) => s.clientUrl);
  }

  static async start(options: BenchClusterOptions): Promise<BenchCluster> {
    ensureBuilt();
    const c = new BenchCluster(mkdtempSync(join(tmpdir(), 'hl-bench-')));
    try {
      await c.#startNats(options.replicas);
      for (let i = 1; i <= options.nodes; i++) await c.startNode(i, options);
      c.#sampler = setInterval(() => c.#sample(), 200);
      return c;
    } catch (err) {
      await c.stop();
      throw err;
    }
  }

  async #startNats(replicas: 1 | 3): Promise<void> {
    if (replicas === 1) {
      const s = new EmbeddedNatsServer({
        storeDir: join(this.dir, 'nats-1'),
        serverName: 'bench-1',
        logger: silentLogger(),
      });
      await s.open();
      this.servers.push(s);
      return;
    }
    const { createServer } = await import('node:net');
    const free = () =>
      new Promise<number>((ok) => {
        const srv = createServer().listen(0, '127.0.0.1', () => {
          const { port } = srv.address() as { port: number };
          srv.close(() => ok(port));
        });
      });
    const routes = [await free(), await free(), await free()];
    for (let i = 0; i < 3; i++) {
      const s = new EmbeddedNatsServer({
        storeDir: join(this.dir, `nats-${i + 1}`),
        serverName: `bench-${i + 1}`,
        clusterAddress: `127.0.0.1:${routes[i]}`,
        clusterPeers: routes.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`),
        logger: silentLogger(),
        waitForJetStream: false,
      });
      await s.open();
      this.servers.push(s);
    }
  }

  async startNode(id: number, options: BenchClusterOptions): Promise<BenchNode> {
    const dbPath = join(this.dir, `node-${id}.db`);
    if (!existsSync(dbPath)) {
      const db = new Database(dbPath);
      db.pragma('journal_mode = WAL');
      db.exec(options.schema);
      db.close();
    }
    const config = defaultConfig();
    config.db_path = dbPath;
    config.node_id = id;
    config.nats.urls = this.urls;
    config.replication_log.shards = options.shards;
    config.replication_log.replicas = options.replicas;
    config.replication_log.max_entries = 1_000_000;
    config.snapshot.enabled = false;
    config.logging.format = 'json';
    options.configure?.(config);
    const cfgPath = writeConfigFile(config, join(this.dir, `node-${id}.toml`));
    // HL_BENCH_CPU_PROF=DIR writes a V8 CPU profile of every node into DIR (see --cpu-prof).
    const prof = process.env.HL_BENCH_CPU_PROF
      ? ['--cpu-prof', '--cpu-prof-dir', process.env.HL_BENCH_CPU_PROF]
      : [];
    // HL_BENCH_NODE_FLAGS="--trace-gc ..." passes V8/Node flags to every node (NODE_OPTIONS refuses many).
    const flags = process.env.HL_BENCH_NODE_FLAGS?.split(' ').filter((f) => f !== '') ?? [];
    const child = spawn(process.execPath, [...prof, ...flags, ...NODE_ENTRY, '-config', cfgPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const lines: string[] = [];
    const started = new Promise<void>((ok, fail) => {
      const onData = (b: Buffer) => {
        for (const l of b.toString('utf8').split('\n')) {
          if (l === '') continue;
          lines.push(l);
          if (process.env.HL_BENCH_LOG_GREP && l.includes(process.env.HL_BENCH_LOG_GREP))
            console.error(`[node ${id}] ${l}`);
          if (lines.length > 200) lines.shift();
          if (l.includes('HarmonyLite node started')) ok();
        }
      };
      child.stdout!.on('data', onData);
      child.stderr!.on('data', onData);
      child.once('exit', (code) =>
        fail(new Error(`node ${id} exited (${code}) during start:\n${lines.slice(-20).join('\n')}`)),
      );
    });
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    const node: BenchNode = {
      id,
      dbPath,
      child,
      peakRssBytes: 0,
      cpuSeconds: 0,
      async stop() {
        const s = child.pid === undefined ? undefined : processStats(child.pid);
        if (s) node.cpuSeconds = s.cpuSeconds;
        if (child.exitCode === null) child.kill('SIGTERM');
        await exited;
      },
      kill() {
        child.kill('SIGKILL');
      },
    };
    await started;
    this.nodes.push(node);
    return node;
  }

  #sample(): void {
    for (const n of this.nodes) {
      if (n.child.pid === undefined || n.child.exitCode !== null) continue;
      const s = processStats(n.child.pid);
      if (s) {
        n.peakRssBytes = Math.max(n.peakRssBytes, s.rssBytes);
        n.cpuSeconds = s.cpuSeconds;
      }
    }
  }

  async stop(): Promise<void> {
    if (this.#sampler) clearInterval(this.#sampler);
    await Promise.all(this.nodes.map((n) => n.stop()));
    await Promise.all(this.servers.map((s) => s.close()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}
