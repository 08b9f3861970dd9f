/**
 * The `harmonylite` command as a user runs it: usage errors, -version, -help,
 * a node on the embedded default that stops cleanly (and takes its nats-server
 * child with it), the second-signal escape hatch, the quick start's three-node
 * cluster on cluster flags only, and a missing nats-server binary.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import type { Config } from '../../src/config/config.ts';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  writeConfigFile,
  type CliNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { freezePid } from '../replication/fault-helpers.ts';

const SCHEMA = 'CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)';

/** A zombie (exited, not yet reaped) counts as dead. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Free loopback ports, found by binding port 0 (the caller binds them soon after). */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** The JSON log records a CLI node printed. */
function records(cli: CliNode): Record<string, unknown>[] {
  return cli.output.flatMap((line) => {
    try {
      return [JSON.parse(line) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
}

/** A config for a CLI node on the embedded default (no [nats] urls), JSON logs. */
function embeddedConfig(dir: string, nodeId: number, configure?: (c: Config) => void): string {
  const config = nodeConfig({ dir, nodeId, urls: [] });
  config.snapshot.enabled = false;
  configure?.(config);
  createDatabase(config.db_path, SCHEMA);
  return writeConfigFile(config, join(dir, `node-${nodeId}.toml`));
}

/** What the process writes to stderr alone (listened to from the same tick as the spawn, so nothing is missed). */
function stderrOf(cli: CliNode): () => string {
  let text = '';
  cli.child.stderr!.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return () => text;
}

/** Kills whatever a failed test left running. */
function cleanup(clis: readonly CliNode[], pids: readonly number[]): void {
  for (const c of clis) if (c.child.exitCode === null && c.child.signalCode === null) c.kill('SIGKILL');
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGCONT');
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

describe('harmonylite CLI', () => {
  it('a missing -config file exits 2 with "Error:" and "Try:"', async () => {
    using dir = tempDir();
    const cli = spawnCli(['-config', join(dir.path, 'nope.toml')]);
    const stderr = stderrOf(cli);
    assert.equal(await cli.exited, 2);
    const text = stderr();
    assert.match(text, /^Error: .*nope\.toml/m);
    assert.match(text, /^Try: /m);
  });

  it('-version prints the version and -help the usage, exit 0', async () => {
    const v = spawnCli(['-version']);
    const h = spawnCli(['-help']);
    assert.equal(await v.exited, 0);
    assert.match(v.output.join('\n'), /^harmonylite \d+\.\d+\.\d+/);
    assert.equal(await h.exited, 0);
    const usage = h.output.join('\n');
    assert.match(usage, /^Usage: harmonylite/m);
    for (const flag of ['-config', '-cluster-addr', '-cluster-peers', '-version'])
      assert.ok(usage.includes(flag));
  });

  it('a node on the embedded default logs "watching N tables" and stops on SIGINT with exit 0, its nats-server gone', async () => {
    using dir = tempDir();
    const path = embeddedConfig(dir.path, 1, (c) => {
      createDatabase(c.db_path, 'CREATE TABLE other (k INTEGER PRIMARY KEY, v BLOB)');
    });
    const cli = spawnCli(['-config', path]);
    const pids: number[] = [];
    try {
      await cli.waitForOutput(/HarmonyLite node started/, 30_000);
      const recs = records(cli);
      assert.ok(
        recs.some((r) => r.msg === 'watching 2 tables'),
        `no "watching 2 tables" in ${cli.output.join('\n')}`,
      );
      const ready = recs.find((r) => r.msg === 'embedded nats-server ready');
      const pid = ready?.server_pid;
      assert.equal(typeof pid, 'number', 'the log names the embedded server pid');
      pids.push(pid as number);
      assert.ok(alive(pid as number));

      cli.kill('SIGINT');
      assert.equal(await cli.exited, 0);
      assert.ok(cli.output.some((l) => l.includes('HarmonyLite node stopped')));
      assert.equal(alive(pid as number), false, `nats-server ${String(pid)} is gone after the node stopped`);
    } finally {
      cleanup([cli], pids);
    }
  });

  it('a second SIGINT during the stop exits at once (130), and still takes the nats-server child along', async () => {
    using dir = tempDir();
    const path = embeddedConfig(dir.path, 1);
    const cli = spawnCli(['-config', path]);
    const pids: number[] = [];
    try {
      await cli.waitForOutput(/HarmonyLite node started/, 30_000);
      const pid = records(cli).find((r) => r.msg === 'embedded nats-server ready')?.server_pid as number;
      pids.push(pid);
      // A frozen server makes the graceful stop hang (the connection drain waits for it).
      await freezePid(pid);
      cli.kill('SIGINT');
      await cli.waitForOutput(/stopping \(send the signal again/);
      const t0 = Date.now();
      cli.kill('SIGINT');
      assert.equal(await cli.exited, 130);
      assert.ok(Date.now() - t0 < 4000, `exited ${Date.now() - t0} ms after the second signal`);
      assert.ok(cli.output.some((l) => l.includes('second signal')));
      await waitFor(`nats-server ${pid} to be gone`, () => !alive(pid), { timeoutMs: 10_000 });
    } finally {
      cleanup([cli], pids);
    }
  });

  it('a clustered node whose peers never come up waits for them, and stops on SIGINT with exit 0', async () => {
    using dir = tempDir();
    const [own, peer] = await freePorts(2);
    const path = embeddedConfig(dir.path, 1);
    const cli = spawnCli([
      '-config',
      path,
      '-cluster-addr',
      `127.0.0.1:${own}`,
      '-cluster-peers',
      `nats://127.0.0.1:${peer}`,
    ]);
    const pids: number[] = [];
    try {
      // Without its peer the server has no JetStream quorum: the node waits in its start.
      await cli.waitForOutput(/embedded nats-server ready/, 30_000);
      pids.push(records(cli).find((r) => r.msg === 'embedded nats-server ready')?.server_pid as number);
      assert.equal(cli.child.exitCode, null, 'still running, waiting for its peers');
      cli.kill('SIGINT');
      assert.equal(await cli.exited, 0);
      assert.equal(alive(pids[0]!), false);
    } finally {
      cleanup([cli], pids);
    }
  });

  it('a missing nats-server binary is a clear error that says how to install it, exit 1', async () => {
    using dir = tempDir();
    const path = embeddedConfig(dir.path, 1, (c) => {
      c.nats.server_binary = '/nonexistent/nats-server';
    });
    const cli = spawnCli(['-config', path]);
    const stderr = stderrOf(cli);
    assert.equal(await cli.exited, 1);
    const text = stderr();
    assert.match(text, /^Error: nats-server not found.*\/nonexistent\/nats-server/m);
    assert.match(text, /^Try: .*apt-get install -y nats-server/m);
  });

  it('quick start: three nodes on the embedded default with cluster flags form a JetStream cluster and replicate', async () => {
    using dir = tempDir();
    const routes = await freePorts(3);
    const ids = [1, 2, 3];
    const clis: CliNode[] = [];
    const pids: number[] = [];
    try {
      for (const id of ids) {
        const path = embeddedConfig(dir.path, id, (c) => {
          c.replication_log.shards = 2;
          c.replication_log.replicas = 3;
        });
        const peers = ids.filter((p) => p !== id).map((p) => `nats://127.0.0.1:${routes[p - 1]}`);
        const cli = spawnCli([
          '-config',
          path,
          '-cluster-addr',
          `127.0.0.1:${routes[id - 1]}`,
          '-cluster-peers',
          peers.join(','),
        ]);
        clis.push(cli);
        // Node 1 comes up alone first: its JetStream has no quorum until the others join, and it must wait for them.
        if (id === 1) await cli.waitForOutput(/embedded nats-server ready/, 30_000);
      }
      await Promise.all(clis.map((c) => c.waitForOutput(/HarmonyLite node started/, 60_000)));
      for (const c of clis)
        pids.push(records(c).find((r) => r.msg === 'embedded nats-server ready')?.server_pid as number);

      const dbs = ids.map((id) => join(dir.path, `node-${id}.db`));
      const write = (node: number, id: string) => {
        const db = new Database(dbs[node - 1]!);
        db.prepare('INSERT INTO notes (id, body) VALUES (?, ?)').run(id, `written on node ${node}`);
        db.close();
      };
      const has = (node: number, id: string) => {
        const db = new Database(dbs[node - 1]!, { readonly: true });
        try {
          return db.prepare('SELECT body FROM notes WHERE id = ?').pluck().get(id) as string | undefined;
        } finally {
          db.close();
        }
      };
      write(1, 'from-1');
      write(3, 'from-3');
      for (const node of ids) {
        await waitFor(`node ${node} to hold both rows`, () => has(node, 'from-1') && has(node, 'from-3'), {
          timeoutMs: 30_000,
        });
      }
      assert.equal(has(2, 'from-1'), 'written on node 1');
      assert.equal(has(2, 'from-3'), 'written on node 3');

      for (const c of clis) c.kill('SIGINT');
      assert.deepEqual(await Promise.all(clis.map((c) => c.exited)), [0, 0, 0]);
      for (const pid of pids) assert.equal(alive(pid), false);
    } finally {
      cleanup(clis, pids);
    }
  });
});
