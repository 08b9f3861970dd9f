/**
 * One-shot commands on the embedded default (no `[nats] urls`), as HarmonyLite's
 * e2e tests run them: -save-snapshot on a node stopped gracefully or killed
 * with -9 starts the node's server for the command; -dead-letter-stuck and
 * -status find a running node's server; NATS errors name the URLs tried.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
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

const SCHEMA = 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)';

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function embeddedNode(dir: string): { config: string; db: string } {
  const c = nodeConfig({ dir, nodeId: 1, urls: [] });
  c.snapshot.enabled = true;
  createDatabase(c.db_path, SCHEMA);
  return { config: writeConfigFile(c, join(dir, 'node-1.toml')), db: c.db_path };
}

function insert(db: string, from: number, to: number): void {
  const c = new Database(db);
  const stmt = c.prepare('INSERT INTO notes (id, body) VALUES (?, ?)');
  for (let i = from; i <= to; i++) stmt.run(i, `row ${i}`);
  c.close();
}

/** Runs a command to its end; returns exit code and output. */
async function run(args: string[]): Promise<{ code: number | null; text: string }> {
  const cli = spawnCli(args);
  const code = await cli.exited;
  return { code, text: cli.output.join('\n') };
}

async function startedNode(config: string): Promise<CliNode> {
  const cli = spawnCli(['-config', config]);
  await cli.waitForOutput(/HarmonyLite node started/, 30_000);
  return cli;
}

/** The pid in the node's embedded-server pid file, gone or not. */
function storePid(db: string): number {
  return Number(readFileSync(`${db}-nats/nats-server.pid`, 'utf8').trim());
}

describe('commands on the embedded default', () => {
  it('-save-snapshot works on a node stopped gracefully and on a node killed with -9', async () => {
    using dir = tempDir();
    const { config, db } = embeddedNode(dir.path);
    const node = await startedNode(config);
    try {
      insert(db, 1, 50);
      node.kill('SIGINT');
      assert.equal(await node.exited, 0);

      const afterStop = await run(['-config', config, '-save-snapshot']);
      assert.equal(afterStop.code, 0, afterStop.text);
      assert.match(afterStop.text, /^Snapshot saved to /m);
      assert.match(afterStop.text, /the node is not running: started its embedded nats-server/);
      const commandServer = storePid(db);
      assert.equal(alive(commandServer), false, 'the server started for the command stopped with it');

      const again = await startedNode(config);
      insert(db, 51, 60);
      again.kill('SIGKILL');
      await again.exited;
      await waitFor('the killed node server to be gone', () => !alive(storePid(db)), { timeoutMs: 5_000 });
      const afterKill = await run(['-config', config, '-save-snapshot']);
      assert.equal(afterKill.code, 0, afterKill.text);
      assert.match(afterKill.text, /^Snapshot saved to /m);
    } finally {
      if (node.child.exitCode === null) node.kill('SIGKILL');
    }
  });

  it('-dead-letter-stuck and -status find a running node embedded server (no [nats] urls needed)', async () => {
    using dir = tempDir();
    const { config } = embeddedNode(dir.path);
    const node = await startedNode(config);
    try {
      const r = await run(['-config', config, '-dead-letter-stuck', '1']);
      assert.equal(r.code, 0, r.text);
      assert.match(r.text, /^shard 1: no message after position \d+; nothing is stuck$/m);
      assert.doesNotMatch(r.text, /started its embedded nats-server/, 'the running node server was used');
      const status = await run(['-config', config, '-status']);
      assert.equal(status.code, 0, status.text);
      assert.match(
        status.text,
        /^ {2}NODE +SHARD +POSITION +LAG +STATE/m,
        'the cluster part, read from its server',
      );
      assert.doesNotMatch(status.text, /Cluster: not shown/);
      node.kill('SIGINT');
      assert.equal(await node.exited, 0);
    } finally {
      if (node.child.exitCode === null) node.kill('SIGKILL');
    }
  });

  it('a NATS connection error names the URLs tried', async () => {
    using dir = tempDir();
    const c = nodeConfig({
      dir: dir.path,
      nodeId: 1,
      urls: ['nats://127.0.0.1:1', 'nats://u:secret@127.0.0.1:2'],
    });
    c.nats.connect_retries = 0;
    createDatabase(c.db_path, SCHEMA);
    const r = await run(['-config', writeConfigFile(c, join(dir.path, 'a.toml')), '-save-snapshot']);
    assert.equal(r.code, 1, r.text);
    const line = r.text.split('\n').find((l) => l.startsWith('Error: '));
    assert.match(
      line ?? '',
      /^Error: cannot reach NATS at nats:\/\/127\.0\.0\.1:1, nats:\/\/[^@]*@?127\.0\.0\.1:2: /,
    );
    assert.doesNotMatch(r.text, /secret/);
  });
});
