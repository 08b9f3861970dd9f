/**
 * The chaos suite: three HarmonyLite CLI nodes over a 3-server JetStream cluster
 * (R3 streams), concurrent random writes on every node (one writer is the stock
 * sqlite3 shell), and faults at random times: kill -9 of a node or a server,
 * SIGSTOP/SIGCONT of either, a network partition of a node (TCP proxies cut).
 * After healing and quiescence it checks:
 *  - every user table is identical on every node;
 *  - no lost write: every write a writer committed is in the streams, and every
 *    node's tables equal the fold of the streams in stream order (last writer wins);
 *  - no node crashed, no dead letters.
 * Every run is reproducible from its seed.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { decodeBody } from '../../src/codec/change-batch-codec.ts';
import { fromWire } from '../../src/codec/sql-value.ts';
import { streamName } from '../../src/nats/naming.ts';
import { parseMsgId } from '../../src/replication/msg-id.ts';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  tableContents,
  writeConfigFile,
  type CliNode,
} from '../helpers/node-harness.ts';
import { startNatsCluster, type TestNatsCluster } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { TcpProxy } from './tcp-proxy.ts';

export const CHAOS_SCHEMA = `
CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT NOT NULL, writer INTEGER NOT NULL);
CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v BLOB, writer INTEGER NOT NULL, PRIMARY KEY (a, b)) WITHOUT ROWID;
`;
const TABLES = ['kv', 'pairs'] as const;
const FAULTS = ['kill-node', 'kill-server', 'pause-node', 'pause-server', 'partition-node'] as const;
export type FaultKind = (typeof FAULTS)[number];

export interface ChaosOptions {
  readonly seed: number;
  readonly durationMs: number;
  readonly shards?: number;
  readonly faults?: readonly FaultKind[];
  /** Mean time between faults, ms. */
  readonly faultEveryMs?: number;
  readonly log?: (line: string) => void;
}

export interface ChaosReport {
  readonly seed: number;
  readonly faults: string[];
  readonly writes: number;
  readonly streamChanges: number;
  readonly divergences: string[];
  readonly lostWrites: string[];
  readonly crashes: string[];
  readonly deadLetters: number;
}

/** mulberry32: small, fast, seedable. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Write {
  readonly node: number;
  readonly table: string;
  readonly key: string;
  readonly op: 'upsert' | 'delete';
  /** The unique value written (upserts), to find the write in the streams. */
  readonly token?: string;
}

interface ChaosNode {
  readonly id: number;
  readonly dbPath: string;
  readonly configPath: string;
  readonly proxies: TcpProxy[];
  cli: CliNode | undefined;
  killedByUs: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const keyOf = (table: string, row: Record<string, unknown>) =>
  table === 'kv' ? String(row.k) : `${String(row.a)}/${String(row.b)}`;

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? (() => undefined);
  const rand = prng(options.seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const shards = options.shards ?? 2;
  const faultKinds = options.faults ?? FAULTS;
  const dir = tempDir('hl-chaos-');
  const faults: string[] = [];
  const crashes: string[] = [];
  const writes: Write[] = [];
  let cluster: TestNatsCluster | undefined;
  const nodes: ChaosNode[] = [];
  const started = Date.now();
  const note = (s: string) => {
    const line = `+${((Date.now() - started) / 1000).toFixed(1)}s ${s}`;
    faults.push(line);
    log(line);
  };
  try {
    cluster = await startNatsCluster(3);
    const serverPorts = cluster.servers.map((s) => Number(new URL(s.url).port));
    for (const id of [1, 2, 3]) {
      const proxies = serverPorts.map((p) => new TcpProxy(p));
      for (const p of proxies) await p.open();
      const config = nodeConfig({
        dir: dir.path,
        nodeId: id,
        urls: proxies.map((p) => p.url),
        configure: (c) => {
          c.replication_log.shards = shards;
          c.replication_log.replicas = 3;
          c.replication_log.max_entries = 1_000_000;
          c.nats.publish_timeout = 2000;
          c.nats.reconnect_wait_seconds = 0.25;
          c.snapshot.enabled = false;
          c.schema_retry_interval = 500;
        },
      });
      createDatabase(config.db_path, CHAOS_SCHEMA);
      const configPath = writeConfigFile(config, join(dir.path, `node-${id}.toml`));
      nodes.push({ id, dbPath: config.db_path, configPath, proxies, cli: undefined, killedByUs: false });
    }
    const startCli = async (n: ChaosNode) => {
      n.killedByUs = false;
      const cli = spawnCli(['-config', n.configPath]);
      n.cli = cli;
      void cli.exited.then((code) => {
        if (!n.killedByUs && n.cli === cli)
          crashes.push(`node ${n.id} exited with ${code}: ${cli.output.slice(-5).join(' | ')}`);
      });
      await cli.waitForOutput(/HarmonyLite node started/, 60_000);
    };
    await Promise.all(nodes.map(startCli));
    log(`seed ${options.seed}: 3 nodes up, shards ${shards}, R3`);

    // Writers: one loop per node through better-sqlite3; every 10th write of node 3 goes through the sqlite3 shell.
    let writing = true;
    let counter = 0;
    const writer = async (n: ChaosNode) => {
      const db = new Database(n.dbPath, { timeout: 10_000 });
      try {
        while (writing) {
          const token = `${n.id}:${++counter}`;
          const table = pick(TABLES);
          const r = rand();
          const useShell = n.id === 3 && counter % 10 === 0;
          if (table === 'kv') {
            const k = 1 + Math.floor(rand() * 40);
            let sql: string;
            if (r < 0.15) {
              sql = `DELETE FROM kv WHERE k = ${k}`;
              writes.push({ node: n.id, table, key: String(k), op: 'delete' });
            } else if (r < 0.25) {
              const to = 1 + Math.floor(rand() * 40);
              // A key change: only when the target key is free on this node (the app's own constraint).
              sql = `UPDATE kv SET k = ${to}, v = '${token}', writer = ${n.id} WHERE k = ${k} AND NOT EXISTS (SELECT 1 FROM kv WHERE k = ${to})`;
              writes.push({ node: n.id, table, key: String(to), op: 'upsert', token });
            } else {
              sql = `INSERT INTO kv (k, v, writer) VALUES (${k}, '${token}', ${n.id}) ON CONFLICT (k) DO UPDATE SET v = excluded.v, writer = excluded.writer`;
              writes.push({ node: n.id, table, key: String(k), op: 'upsert', token });
            }
            let changes: number;
            if (useShell) {
              const res = spawnSync(
                'sqlite3',
                ['-cmd', '.timeout 10000', n.dbPath, `${sql}; SELECT changes();`],
                { encoding: 'utf8' },
              );
              if (res.status !== 0) throw new Error(`sqlite3 shell failed: ${res.stderr}`);
              changes = Number(res.stdout.trim());
            } else {
              changes = db.prepare(sql).run().changes;
            }
            // A key change that did not happen (source missing or target taken) is not a write.
            if (changes === 0 && r >= 0.15 && r < 0.25) writes.pop();
          } else {
            const a = pick(['x', 'y', 'z']);
            const b = Math.floor(rand() * 10);
            if (r < 0.2) {
              db.prepare('DELETE FROM pairs WHERE a = ? AND b = ?').run(a, b);
              writes.push({ node: n.id, table, key: `${a}/${b}`, op: 'delete' });
            } else {
              const blob = Buffer.from(token);
              db.prepare(
                'INSERT INTO pairs (a, b, v, writer) VALUES (?, ?, ?, ?) ON CONFLICT (a, b) DO UPDATE SET v = excluded.v, writer = excluded.writer',
              ).run(a, b, blob, n.id);
              writes.push({ node: n.id, table, key: `${a}/${b}`, op: 'upsert', token });
            }
          }
          await sleep(5 + Math.floor(rand() * 20));
        }
      } finally {
        db.close();
      }
    };
    const writers = nodes.map((n) => writer(n));

    // Faults until the duration is over.
    const faultEvery = options.faultEveryMs ?? 4000;
    const deadline = Date.now() + options.durationMs;
    while (Date.now() < deadline - 2000) {
      await sleep(faultEvery / 2 + rand() * faultEvery);
      if (Date.now() >= deadline - 2000) break;
      const kind = pick(faultKinds);
      const outage = 500 + Math.floor(rand() * 2500);
      if (kind === 'kill-node' || kind === 'pause-node' || kind === 'partition-node') {
        const n = pick(nodes);
        if (kind === 'kill-node') {
          note(`kill -9 node ${n.id} for ${outage} ms`);
          n.killedByUs = true;
          n.cli!.kill('SIGKILL');
          await n.cli!.exited;
          await sleep(outage);
          await startCli(n);
          note(`node ${n.id} restarted`);
        } else if (kind === 'pause-node') {
          note(`SIGSTOP node ${n.id} for ${outage} ms`);
          n.cli!.kill('SIGSTOP');
          await sleep(outage);
          n.cli!.kill('SIGCONT');
        } else {
          note(`partition node ${n.id} for ${outage} ms`);
          for (const p of n.proxies) p.cut();
          await sleep(outage);
          for (const p of n.proxies) p.heal();
        }
      } else {
        const i = Math.floor(rand() * 3);
        const s = cluster.servers[i]!;
        if (kind === 'kill-server') {
          note(`kill -9 nats-server ${i + 1} for ${outage} ms`);
          s.kill('SIGKILL');
          await sleep(outage);
          await s.restart();
          note(`nats-server ${i + 1} restarted`);
        } else {
          note(`SIGSTOP nats-server ${i + 1} for ${outage} ms`);
          s.kill('SIGSTOP');
          await sleep(outage);
          s.kill('SIGCONT');
        }
      }
    }
    writing = false;
    await Promise.all(writers);
    log(`writes stopped: ${writes.length} writes; waiting for quiescence`);

    // Quiescence: nothing pending anywhere, then identical tables.
    await waitFor(
      'every node to publish all its changes',
      () =>
        nodes.every((n) => {
          const db = new Database(n.dbPath, { readonly: true });
          try {
            return (
              (db
                .prepare('SELECT count(*) FROM "__harmonylite___global_change_log"')
                .pluck()
                .get() as number) === 0
            );
          } finally {
            db.close();
          }
        }),
      { timeoutMs: 120_000, intervalMs: 250 },
    );
    const divergences: string[] = [];
    try {
      await waitFor(
        'identical tables on every node',
        () => TABLES.every((t) => new Set(nodes.map((n) => tableContents(n.dbPath, t))).size === 1),
        { timeoutMs: 120_000, intervalMs: 250 },
      );
    } catch {
      for (const t of TABLES) {
        const contents = nodes.map((n) => tableContents(n.dbPath, t));
        if (new Set(contents).size > 1) divergences.push(`${t}: ${firstDifference(contents)}`);
      }
    }

    // The streams, decoded in stream order: every write must be there, and the fold must equal each node.
    const nc = await connect({ servers: cluster.urls });
    const jsm = await jetstreamManager(nc);
    const model = new Map<string, Map<string, string | undefined>>(TABLES.map((t) => [t, new Map()]));
    const seenTokens = new Set<string>();
    let streamChanges = 0;
    for (let shard = 1; shard <= shards; shard++) {
      const stream = streamName('harmonylite-changes', shard);
      const info = await jsm.streams.info(stream);
      const applied = new Map<number, number>();
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage(stream, { seq });
        if (m === null) continue;
        const id = parseMsgId(m.header?.get('Nats-Msg-Id'));
        if (id !== undefined) {
          if (id.seq <= (applied.get(id.origin) ?? 0)) continue; // a re-published batch: receivers skip it too
          applied.set(id.origin, id.seq);
        }
        for (const rec of decodeBody(m.data)) {
          const p = rec.Payload;
          const row = Object.fromEntries(Object.entries(p.Row).map(([k, v]) => [k, fromWire(v)]));
          const key = keyOf(p.TableName, row);
          streamChanges++;
          if (p.Type === 'delete') model.get(p.TableName)!.set(key, undefined);
          else {
            const token = p.TableName === 'kv' ? String(row.v) : Buffer.from(row.v as Uint8Array).toString();
            seenTokens.add(token);
            model.get(p.TableName)!.set(key, token);
          }
        }
      }
    }
    await nc.close();
    const lostWrites = writes
      .filter((w) => w.op === 'upsert' && !seenTokens.has(w.token!))
      .map((w) => `${w.table} ${w.key} ${w.token}`);
    for (const n of nodes) {
      const db = new Database(n.dbPath, { readonly: true });
      try {
        const actual = new Map<string, Map<string, string>>([
          [
            'kv',
            new Map(
              (db.prepare('SELECT k, v FROM kv').all() as { k: number; v: string }[]).map((r) => [
                String(r.k),
                r.v,
              ]),
            ),
          ],
          [
            'pairs',
            new Map(
              (db.prepare('SELECT a, b, v FROM pairs').all() as { a: string; b: number; v: Buffer }[]).map(
                (r) => [`${r.a}/${r.b}`, r.v.toString()],
              ),
            ),
          ],
        ]);
        for (const t of TABLES) {
          const want = [...model.get(t)!].filter(([, v]) => v !== undefined);
          const have = actual.get(t)!;
          if (want.length !== have.size || want.some(([k, v]) => have.get(k) !== v)) {
            const diff =
              want.find(([k, v]) => have.get(k) !== v) ??
              [...have].find(([k]) => model.get(t)!.get(k) === undefined);
            divergences.push(
              `node ${n.id} ${t} differs from the stream fold: first at ${JSON.stringify(diff)} (have ${JSON.stringify(diff ? have.get(diff[0]) : undefined)})`,
            );
          }
        }
      } finally {
        db.close();
      }
    }
    let deadLetters = 0;
    for (const n of nodes) {
      const db = new Database(n.dbPath, { readonly: true });
      deadLetters += db
        .prepare('SELECT count(*) FROM "__harmonylite___dead_letters"')
        .pluck()
        .get() as number;
      db.close();
    }
    return {
      seed: options.seed,
      faults,
      writes: writes.length,
      streamChanges,
      divergences,
      lostWrites,
      crashes,
      deadLetters,
    };
  } finally {
    for (const n of nodes) {
      n.killedByUs = true;
      n.cli?.kill('SIGCONT');
      n.cli?.kill('SIGKILL');
      for (const p of n.proxies) await p.close();
    }
    await Promise.all(nodes.map((n) => n.cli?.exited));
    for (const s of cluster?.servers ?? []) s.kill('SIGCONT');
    await cluster?.close();
    dir.remove();
  }
}

function firstDifference(contents: string[]): string {
  const rows = contents.map((c) => JSON.parse(c) as unknown[]);
  const n = Math.max(...rows.map((r) => r.length));
  for (let i = 0; i < n; i++) {
    const at = rows.map((r) => JSON.stringify(r[i]));
    if (new Set(at).size > 1) return `row ${i}: ${at.join(' vs ')}`;
  }
  return 'lengths differ';
}
