/**
 * kill -9 of a node on the embedded default: its nats-server child dies with it
 * (setpriv --pdeathsig), and the node restarts and replicates as if stopped
 * gracefully. Without setpriv the orphaned server is replaced at the next start.
 */
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  writeConfigFile,
  type CliNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { freePorts } from '../replication/fault-helpers.ts';

const SCHEMA = 'CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)';

/** A zombie (exited, not yet reaped) counts as dead. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function serverPid(cli: CliNode): number {
  for (const line of cli.output) {
    try {
      const r = JSON.parse(line) as { msg?: string; server_pid?: number };
      if (r.msg === 'embedded nats-server ready' && typeof r.server_pid === 'number') return r.server_pid;
    } catch {
      // not JSON
    }
  }
  assert.fail(`no "embedded nats-server ready" line in:\n${cli.output.join('\n')}`);
}

function write(db: string, id: string): void {
  const c = new Database(db);
  c.prepare('INSERT INTO notes (id, body) VALUES (?, ?)').run(id, `row ${id}`);
  c.close();
}

function has(db: string, id: string): boolean {
  const c = new Database(db, { readonly: true });
  try {
    return c.prepare('SELECT 1 FROM notes WHERE id = ?').get(id) !== undefined;
  } finally {
    c.close();
  }
}

/** Node 1 on the embedded default on a fixed client port; node 2 connects to that server. */
async function pairConfigs(dir: string): Promise<{ one: string; two: string; dbs: [string, string] }> {
  const [port] = await freePorts(1);
  const one = nodeConfig({ dir, nodeId: 1, urls: [] });
  one.nats.bind_address = `127.0.0.1:${port}`;
  const two = nodeConfig({ dir, nodeId: 2, urls: [`nats://127.0.0.1:${port}`] });
  // The embedded server requires credentials: node 2 connects with the ones node 1's server enforces.
  for (const c of [one, two]) {
    c.nats.user_name = 'app';
    c.nats.user_password = 'pair-secret';
  }
  two.nats.connect_retries = 30;
  two.nats.reconnect_wait_seconds = 0.2;
  for (const c of [one, two]) {
    c.snapshot.enabled = false;
    createDatabase(c.db_path, SCHEMA);
  }
  return {
    one: writeConfigFile(one, join(dir, 'node-1.toml')),
    two: writeConfigFile(two, join(dir, 'node-2.toml')),
    dbs: [one.db_path, two.db_path],
  };
}

describe('kill -9 of a node on the embedded default', () => {
  it('takes its nats-server child along, and the node restarts and replicates', async () => {
    using dir = tempDir();
    const { one, two, dbs } = await pairConfigs(dir.path);
    const clis: CliNode[] = [];
    const pids: number[] = [];
    try {
      const first = spawnCli(['-config', one]);
      clis.push(first);
      await first.waitForOutput(/HarmonyLite node started/, 30_000);
      const second = spawnCli(['-config', two]);
      clis.push(second);
      await second.waitForOutput(/HarmonyLite node started/, 30_000);
      const pid = serverPid(first);
      pids.push(pid);

      first.kill('SIGKILL');
      await first.exited;
      await waitFor(`nats-server ${pid} to die with its node`, () => !alive(pid), { timeoutMs: 5_000 });

      const again = spawnCli(['-config', one]);
      clis.push(again);
      await again.waitForOutput(/HarmonyLite node started/, 30_000);
      pids.push(serverPid(again));
      write(dbs[1], 'from-2');
      write(dbs[0], 'from-1');
      await waitFor('node 1 to hold node 2 row', () => has(dbs[0], 'from-2'), { timeoutMs: 30_000 });
      await waitFor('node 2 to hold node 1 row', () => has(dbs[1], 'from-1'), { timeoutMs: 30_000 });

      for (const c of [again, second]) c.kill('SIGINT');
      assert.deepEqual(await Promise.all([again.exited, second.exited]), [0, 0]);
    } finally {
      for (const c of clis) if (c.child.exitCode === null && c.child.signalCode === null) c.kill('SIGKILL');
      for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL');
    }
  });

  it('without setpriv, the next start replaces the orphaned server (logged) instead of refusing', async () => {
    using dir = tempDir();
    const { one } = await pairConfigs(dir.path);
    // A PATH holding nats-server alone: no setpriv, so the child outlives a killed node.
    const bin = join(dir.path, 'bin');
    mkdirSync(bin);
    const natsServer = execFileSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).trim();
    symlinkSync(natsServer, join(bin, 'nats-server'));
    const clis: CliNode[] = [];
    const pids: number[] = [];
    try {
      const first = spawnCli(['-config', one], { env: { PATH: bin } });
      clis.push(first);
      await first.waitForOutput(/HarmonyLite node started/, 30_000);
      const orphan = serverPid(first);
      pids.push(orphan);
      first.kill('SIGKILL');
      await first.exited;
      assert.ok(alive(orphan), 'the server outlived its node');

      const again = spawnCli(['-config', one]);
      clis.push(again);
      await again.waitForOutput(/HarmonyLite node started/, 30_000);
      const line = again.output.find((l) =>
        l.includes('replacing the nats-server left running by a node that died'),
      );
      assert.ok(line !== undefined, again.output.join('\n'));
      assert.equal((JSON.parse(line) as { server_pid: number }).server_pid, orphan);
      assert.equal(alive(orphan), false);
      const replacement = serverPid(again);
      pids.push(replacement);
      assert.notEqual(replacement, orphan);
      again.kill('SIGINT');
      assert.equal(await again.exited, 0);
      assert.equal(alive(replacement), false);
    } finally {
      for (const c of clis) if (c.child.exitCode === null && c.child.signalCode === null) c.kill('SIGKILL');
      for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL');
    }
  });
});
