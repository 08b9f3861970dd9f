/**
 * Node identity with CLI nodes on a real nats-server (design.md, invariant 10):
 * a database copied to another node (or a cloned machine) carries the
 * generated node id, and the second live process is refused with an error
 * naming the first; once the first is killed (-9) the id is taken over at once
 * on the same machine; a registration left by a process on another machine
 * expires and the node starts; nodes whose shared settings differ are refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { hostname } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { nodeRegistryBucket } from '../../src/nats/naming.ts';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  startNode,
  writeConfigFile,
  type CliNode,
  type TestNode,
} from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { closeAll } from '../replication/converge-helpers.ts';

const SCHEMA = 'CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT NOT NULL)';
/**
 * Lease lifetimes: the buckets exist before the nodes (their max_age wins). The CLI nodes' is long,
 * so a takeover after kill -9 that happens at once cannot be an expiry; the in-process node's short.
 */
const CLI_TTL_MS = 30_000;
const TTL_MS = 3000;

const dir = tempDir('hl-node-identity-');
let nats: TestNatsServer;
let nc: NatsConnection;
const clis: CliNode[] = [];
const nodes: TestNode[] = [];

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  await new Kvm(nc).create(nodeRegistryBucket('harmonylite-changes'), { history: 1, ttl: TTL_MS });
  await new Kvm(nc).create(nodeRegistryBucket('identity'), { history: 1, ttl: CLI_TTL_MS });
});

after(async () => {
  for (const c of clis) if (c.child.exitCode === null && c.child.signalCode === null) c.kill('SIGKILL');
  await nc?.close();
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

/** A CLI config on `<name>.db` with the default node_id (generated and stored in the database). */
function cliConfig(name: string, configure?: (c: ReturnType<typeof nodeConfig>) => void): string {
  const config = nodeConfig({ dir: dir.path, nodeId: 0, urls: [nats.url] });
  config.nats.stream_prefix = 'identity';
  config.nats.subject_prefix = 'identity-change-log';
  config.db_path = join(dir.path, `${name}.db`);
  config.node_id = 0;
  config.snapshot.enabled = false;
  configure?.(config);
  return writeConfigFile(config, join(dir.path, `${name}.toml`));
}

function stderrOf(cli: CliNode): () => string {
  let text = '';
  cli.child.stderr!.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
  return () => text;
}

function storedId(path: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare('SELECT id FROM __harmonylite___node_identity').pluck().get() as number;
  } finally {
    db.close();
  }
}

describe('node identity', () => {
  it('a copied database is refused while its original runs, naming it; taken over at once after kill -9', async () => {
    createDatabase(join(dir.path, 'a.db'), SCHEMA);
    const first = spawnCli(['-config', cliConfig('a')]);
    clis.push(first);
    await first.waitForOutput(/HarmonyLite node started/);
    const id = storedId(join(dir.path, 'a.db'));
    // The copy carries the generated id, as a cloned machine's disk would.
    const src = new Database(join(dir.path, 'a.db'));
    src.exec(`VACUUM INTO '${join(dir.path, 'b.db')}'`);
    src.close();
    assert.equal(storedId(join(dir.path, 'b.db')), id);

    const second = spawnCli(['-config', cliConfig('b')]);
    clis.push(second);
    const stderr = stderrOf(second);
    assert.equal(await second.exited, 1, second.output.join('\n'));
    const text = stderr();
    assert.match(
      text,
      new RegExp(
        `^Error: node id ${id} is in use by another live process: host ${hostname()}, pid ${first.child.pid}, ` +
          `database ${join(dir.path, 'a.db')}, running since \\d{4}-\\d\\d-\\d\\dT`,
        'm',
      ),
    );
    assert.match(text, /^Try: give each node its own node_id/m);

    first.kill('SIGKILL');
    await first.exited;
    const t0 = Date.now();
    const again = spawnCli(['-config', cliConfig('b')]);
    clis.push(again);
    await again.waitForOutput(/HarmonyLite node started/);
    assert.ok(
      again.output.some((l) => l.includes('taking its registration over')),
      again.output.join('\n'),
    );
    assert.ok(Date.now() - t0 < CLI_TTL_MS, 'taken over before the registration could expire');
    again.kill('SIGTERM');
    assert.equal(await again.exited, 0);
  });

  it('a registration left by a process on another machine expires and the node starts', async () => {
    const kv = await new Kvm(nc).open(nodeRegistryBucket('harmonylite-changes'));
    await kv.put(
      'node.41',
      JSON.stringify({
        node_id: 41,
        instance: 'elsewhere',
        host: 'other-host',
        pid: 1,
        boot_id: 'another-boot',
        db_path: '/elsewhere/app.db',
        since: new Date().toISOString(),
      }),
    );
    const t0 = Date.now();
    const node = await startNode({ dir: dir.path, nodeId: 41, urls: [nats.url], schema: SCHEMA });
    nodes.push(node);
    const waited = Date.now() - t0;
    assert.ok(node.logs.has('node id is registered by another process'), node.logs.messages().join('\n'));
    assert.ok(waited >= TTL_MS - 500, `started after ${waited} ms, before the registration expired`);
  });

  it('nodes whose shared settings differ are refused with the setting named; shards and compress are logged', async () => {
    createDatabase(join(dir.path, 'c.db'), SCHEMA);
    const other = spawnCli([
      '-config',
      cliConfig('c', (c) => {
        c.replication_log.shard_by_table = ['notes'];
      }),
    ]);
    clis.push(other);
    const stderr = stderrOf(other);
    assert.equal(await other.exited, 2, other.output.join('\n'));
    assert.match(
      stderr(),
      /^Error: this node's settings differ from the cluster's \(recorded by node \d+ at [^)]+\): \[replication_log\] shard_by_table is \["notes"\] here, \[\] in the cluster$/m,
    );

    createDatabase(join(dir.path, 'd.db'), SCHEMA);
    const allowed = spawnCli([
      '-config',
      cliConfig('d', (c) => {
        c.replication_log.shards = 2;
        c.replication_log.compress = false;
      }),
    ]);
    clis.push(allowed);
    await allowed.waitForOutput(/HarmonyLite node started/);
    const out = allowed.output.join('\n');
    assert.match(out, /shards differs from the first node's/);
    assert.match(out, /compress differs from the first node's/);
    allowed.kill('SIGTERM');
    assert.equal(await allowed.exited, 0);
  });
});
