/**
 * `npm run cluster`: three HarmonyLite nodes on this machine, each with its own
 * embedded nats-server; the three servers form a JetStream cluster (R3 streams).
 * Writes a row on node 1, shows it arriving on nodes 2 and 3, then runs until Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';

const ROOT = resolve(new URL('../..', import.meta.url).pathname);
const DIR = join(ROOT, '.harmonylite', 'cluster');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const NODES = [1, 2, 3];

function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => ok(port));
    });
  });
}

const children: ChildProcess[] = [];

async function main(): Promise<void> {
  mkdirSync(DIR, { recursive: true });
  const routes = await Promise.all(NODES.map(() => freePort()));
  const started = new Set<number>();
  for (const id of NODES) {
    const db = join(DIR, `node-${id}.db`);
    const app = new Database(db);
    app.exec(
      'CREATE TABLE IF NOT EXISTS notes (id TEXT PRIMARY KEY, body TEXT NOT NULL, written_on INTEGER NOT NULL)',
    );
    app.close();
    const config = join(DIR, `node-${id}.toml`);
    writeFileSync(
      config,
      [
        `db_path = ${JSON.stringify(db)}`,
        `node_id = ${id}`,
        '[replication_log]',
        'shards = 2',
        'replicas = 3',
        '[nats]',
        `store_dir = ${JSON.stringify(join(DIR, `nats-${id}`))}`,
        '[snapshot]',
        'enabled = false',
        '',
      ].join('\n'),
    );
    const peers = NODES.filter((p) => p !== id).map((p) => `nats://127.0.0.1:${routes[p - 1]}`);
    const log = createWriteStream(join(DIR, `node-${id}.log`), { flags: 'a' });
    const child = spawn(
      process.execPath,
      [
        CLI,
        '-config',
        config,
        '-cluster-addr',
        `127.0.0.1:${routes[id - 1]}`,
        '-cluster-peers',
        peers.join(','),
      ],
      // Own process group: Ctrl-C reaches only this script, which stops each node once, gracefully.
      { stdio: ['ignore', 'pipe', 'pipe'], detached: true },
    );
    const onLine = (chunk: Buffer) => {
      log.write(chunk);
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.includes('HarmonyLite node started')) started.add(id);
        if (/ (ERR|WRN|FTL) /.test(line)) process.stdout.write(`[node ${id}] ${line}\n`);
      }
    };
    child.stdout!.on('data', onLine);
    child.stderr!.on('data', onLine);
    child.on('exit', (code, signal) => process.stdout.write(`[node ${id}] exited (${code ?? signal})\n`));
    children.push(child);
  }
  let stopping = false;
  const stop = () => {
    if (stopping) process.exit(130);
    stopping = true;
    process.stdout.write('\nstopping the cluster...\n');
    for (const c of children) c.kill('SIGTERM');
    void Promise.all(
      children.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.on('exit', r)))),
    ).then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  process.stdout.write(`starting 3 nodes in ${DIR} (logs: node-N.log) ...\n`);
  const deadline = Date.now() + 90_000;
  while (started.size < NODES.length) {
    if (Date.now() > deadline)
      throw new Error(
        `nodes ${NODES.filter((n) => !started.has(n)).join(', ')} did not start; see their logs in ${DIR}`,
      );
    await new Promise((r) => setTimeout(r, 200));
  }
  const key = `hello-${Date.now()}`;
  const writer = new Database(join(DIR, 'node-1.db'));
  writer.prepare('INSERT INTO notes (id, body, written_on) VALUES (?, ?, 1)').run(key, 'written on node 1');
  writer.close();
  process.stdout.write(`wrote notes(${key}) on node 1\n`);
  for (const id of [2, 3]) {
    const db = new Database(join(DIR, `node-${id}.db`), { readonly: true });
    const t0 = Date.now();
    while (db.prepare('SELECT 1 FROM notes WHERE id = ?').get(key) === undefined) {
      if (Date.now() - t0 > 30_000)
        throw new Error(`the row did not reach node ${id}; see ${DIR}/node-${id}.log`);
      await new Promise((r) => setTimeout(r, 20));
    }
    db.close();
    process.stdout.write(`node ${id} has it (${Date.now() - t0} ms)\n`);
  }
  process.stdout.write(
    [
      '',
      'The cluster is running. Write with any SQLite client, for example:',
      `  sqlite3 ${join(DIR, 'node-2.db')} "INSERT INTO notes VALUES ('x', 'from the shell', 2)"`,
      `  sqlite3 ${join(DIR, 'node-3.db')} "SELECT * FROM notes"`,
      'Ctrl-C stops all three nodes.',
      '',
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`Error: ${(err as Error).message}\n`);
  for (const c of children) c.kill('SIGTERM');
  process.exit(1);
});
