import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { EmbeddedNatsServer, NatsServerError } from '../../src/nats/embedded-server.ts';
import { silentLogger } from '../../src/logger.ts';
import { startNatsCluster, startNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';

/** A zombie (exited, not yet reaped by init) counts as dead. */
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

const reconnecting = { maxReconnectAttempts: -1, reconnectTimeWait: 100 } as const;

test('a single server serves JetStream, and close() stops its process', async (t) => {
  const s = await startNatsServer();
  t.after(() => s.close());
  assert.match(s.url, /^nats:\/\/127\.0\.0\.1:\d+$/);
  assert.equal(s.url, `nats://127.0.0.1:${s.server.port}`);

  const nc = await connect({ servers: s.url });
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: 'ORDERS', subjects: ['orders.>'] });
  const ack = await jetstream(nc).publish('orders.1', 'hello');
  assert.equal(ack.stream, 'ORDERS');
  assert.equal(ack.seq, 1);
  await nc.close();

  const pid = s.server.pid;
  assert.ok(alive(pid), `nats-server ${pid} runs`);
  await s.close();
  assert.equal(alive(pid), false, `nats-server ${pid} is gone after close()`);
  assert.equal(s.server.running, false);
  await s.close(); // idempotent
});

test('restart() keeps the port and the stream data, and clients reconnect', async (t) => {
  const s = await startNatsServer();
  t.after(() => s.close());
  const { port, pid } = s.server;
  const nc = await connect({ servers: s.url, ...reconnecting });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: 'KEEP', subjects: ['keep.>'] });
  await jetstream(nc).publish('keep.a', 'before restart');
  let reconnects = 0;
  void (async () => {
    for await (const status of nc.status()) if (status.type === 'reconnect') reconnects++;
  })();

  await s.restart();
  assert.equal(s.server.port, port);
  assert.notEqual(s.server.pid, pid);
  assert.equal(alive(pid), false);

  // Wait for the reconnect first: nats.js 3.4 loses a request sent while it reconnects (it times out).
  await waitFor('the client to reconnect to the same URL', () => reconnects > 0);
  const stored = await jsm.streams.getMessage('KEEP', { seq: 1 });
  assert.equal(stored?.string(), 'before restart');
  const ack = await jetstream(nc).publish('keep.b', 'after restart');
  assert.equal(ack.seq, 2);
});

test('a 3-node cluster keeps an R3 stream writable through kill -9 and restart of its leader', async (t) => {
  const cluster = await startNatsCluster(3);
  t.after(() => cluster.close());
  const nc = await connect({ servers: cluster.urls, ...reconnecting });
  t.after(() => nc.close());
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc, { timeout: 1_000 });
  await jsm.streams.add({ name: 'EVENTS', subjects: ['events.>'], num_replicas: 3 });
  await js.publish('events.1', '1', { msgID: '1' });

  const leader = (await jsm.streams.info('EVENTS')).cluster?.leader;
  const victim = cluster.servers.find((s) => s.name === leader);
  assert.ok(victim, `stream leader ${leader} is one of ${cluster.servers.map((s) => s.name).join(',')}`);
  const victimUrl = victim.url;
  victim.kill('SIGKILL');
  await waitFor('the killed server to exit', () => !victim.server.running);

  // Retried under one msgID, so a publish that timed out but landed is not stored twice.
  await waitFor(
    'a publish acknowledged with one server down',
    () => js.publish('events.2', '2', { msgID: '2' }),
    {
      intervalMs: 200,
    },
  );

  await victim.restart();
  assert.equal(victim.url, victimUrl);
  await js.publish('events.3', '3', { msgID: '3' });
  await waitFor(
    `the restarted ${victim.name} to catch up`,
    async () => {
      const info = await jsm.streams.info('EVENTS');
      const replica = info.cluster?.replicas?.find((r) => r.name === victim.name);
      return info.state.messages === 3 && replica?.current === true && !replica.lag;
    },
    { intervalMs: 200 },
  );
});

test('open() returns once the client port serves when asked not to wait for cluster peers', async (t) => {
  using dir = tempDir();
  const server = new EmbeddedNatsServer({
    storeDir: dir.path,
    serverName: 'lonely',
    logger: silentLogger(),
    clusterAddress: '127.0.0.1:0',
    clusterPeers: ['nats://127.0.0.1:1'], // nobody there: no meta leader
    waitForJetStream: false,
  });
  t.after(() => server.close());
  await server.open();
  assert.ok(server.clusterPort !== undefined && server.clusterPort > 0);
  const nc = await connect({ servers: server.clientUrl });
  await nc.flush();
  await nc.close();
});

test('a missing binary fails with ERR_NATS_SERVER_NOT_FOUND and the install hint', async () => {
  using dir = tempDir();
  const server = new EmbeddedNatsServer({
    binary: 'nats-server-not-installed',
    storeDir: dir.path,
    serverName: 'n',
    logger: silentLogger(),
  });
  await assert.rejects(server.open(), (err: unknown) => {
    assert.ok(err instanceof NatsServerError);
    assert.equal(err.code, 'ERR_NATS_SERVER_NOT_FOUND');
    assert.equal(err.message, 'nats-server not found (looked for "nats-server-not-installed" on PATH)');
    assert.match(err.hint ?? '', /apt-get install -y nats-server/);
    return true;
  });
  await server.close();
});

test("a broken user config fails with ERR_NATS_SERVER_START and the server's complaint", async () => {
  using dir = tempDir();
  const configFile = join(dir.path, 'user.conf');
  writeFileSync(configFile, 'authorization {{{ :::\n');
  const server = new EmbeddedNatsServer({
    storeDir: join(dir.path, 'store'),
    serverName: 'n',
    logger: silentLogger(),
    configFile,
  });
  await assert.rejects(server.open(), (err: unknown) => {
    assert.ok(err instanceof NatsServerError);
    assert.equal(err.code, 'ERR_NATS_SERVER_START');
    assert.match(err.message, /exited during start \(exit code 1\)/);
    assert.match(err.message, /error parsing include file '\.\.\/user\.conf'.*Parse error on line/);
    return true;
  });
  await server.close();
});

test('a second server on a store that a live server uses is refused', async (t) => {
  using dir = tempDir();
  const options = { storeDir: dir.path, serverName: 'n', logger: silentLogger() };
  const first = new EmbeddedNatsServer(options);
  t.after(() => first.close());
  await first.open();
  const second = new EmbeddedNatsServer(options);
  await assert.rejects(second.open(), {
    code: 'ERR_NATS_SERVER_STORE_IN_USE',
    message: `another nats-server (pid ${first.pid}) still runs on store ${dir.path}`,
  });
  assert.ok(first.running);
});

test('a cluster address without peers is a config error, not a server crash', async () => {
  using dir = tempDir();
  const server = new EmbeddedNatsServer({
    storeDir: dir.path,
    serverName: 'n',
    logger: silentLogger(),
    clusterAddress: '127.0.0.1:0',
  });
  await assert.rejects(server.open(), { name: 'NatsServerError', code: 'ERR_NATS_SERVER_CONFIG' });
});

test('the server dies with the process that started it', async () => {
  using dir = tempDir();
  const script = `
    import { EmbeddedNatsServer } from './src/nats/embedded-server.ts';
    import { silentLogger } from './src/logger.ts';
    const s = new EmbeddedNatsServer({ storeDir: ${JSON.stringify(dir.path)}, serverName: 'orphan', logger: silentLogger() });
    await s.open();
    console.log(s.pid);
    process.exit(0);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise((r) => child.once('close', r));
  assert.equal(code, 0);
  const pid = Number(out.trim());
  assert.ok(pid > 0, `printed a pid: ${out}`);
  await waitFor(`orphaned nats-server ${pid} to exit`, () => !alive(pid), { timeoutMs: 10_000 });
});
