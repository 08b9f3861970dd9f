/**
 * Route authentication of an embedded cluster: with credentials in the
 * `-cluster-peers` URLs, two nodes form their cluster and replicate, while a
 * rogue nats-server that routes to them without credentials is refused and
 * cannot carry a change into their streams. The credentials stay out of the
 * generated nats-server.conf. A route port beyond loopback without
 * credentials is announced loudly. A `server_config` with its own `cluster {}`
 * block (mutual TLS) is merged with the cluster flags, not replaced; route TLS
 * from config keys does the same; a rogue server without a certificate is
 * refused by both.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import type { Config } from '../../src/config/config.ts';
import { createLogger } from '../../src/logger.ts';
import { EmbeddedNatsServer } from '../../src/nats/embedded-server.ts';
import { subjectName } from '../../src/nats/naming.ts';
import { HarmonyLiteNode } from '../../src/node/harmonylite-node.ts';
import { appConnection, createDatabase, LogCapture, nodeConfig } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { query } from '../replication/converge-helpers.ts';
import { generateRouteTls } from './nats-credentials.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';
const SECRET = 'route-secret-4e1f';
const dir = tempDir('hl-route-auth-');
const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  dir.remove();
});

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

function startClusterNode(id: number, address: string, peers: string[], configure?: (c: Config) => void) {
  const config = nodeConfig({ dir: dir.path, nodeId: id, urls: [], ...(configure ? { configure } : {}) });
  config.snapshot.enabled = false;
  createDatabase(config.db_path, SCHEMA);
  const logs = new LogCapture();
  const logger = createLogger({ verbose: false, format: 'json', nodeId: id, destination: logs });
  const node = new HarmonyLiteNode({ config, logger, clusterAddress: address, clusterPeers: peers });
  stops.push(() => node.close());
  return { node, config, logs, opened: node.open() };
}

test('a rogue server without route credentials cannot join; the nodes replicate; no secret in nats-server.conf', async () => {
  const [pa, pb, pr] = await freePorts(3);
  const peers = [pa, pb].map((p) => `nats://route:${SECRET}@127.0.0.1:${p}`);
  const a = startClusterNode(1, `127.0.0.1:${pa}`, peers);
  const b = startClusterNode(2, `127.0.0.1:${pb}`, peers);
  await Promise.all([a.opened, b.opened]);

  const db = appConnection(a.config.db_path);
  db.prepare("INSERT INTO items VALUES (1, 'through authenticated routes')").run();
  db.close();
  await waitFor(
    'the row on node 2',
    () => query(b.config.db_path, 'SELECT 1 FROM items WHERE id = 1').length === 1,
    {
      timeoutMs: 30_000,
    },
  );

  const rogueLogs = new LogCapture();
  const rogueDir = tempDir('hl-rogue-');
  const rogue = new EmbeddedNatsServer({
    storeDir: rogueDir.path,
    serverName: 'rogue',
    clusterName: 'harmonylite',
    clusterAddress: `127.0.0.1:${pr}`,
    clusterPeers: [`nats://127.0.0.1:${pa}`],
    jetstream: false,
    waitForJetStream: false,
    logger: createLogger({ verbose: true, format: 'json', nodeId: 99, destination: rogueLogs }),
  });
  stops.push(async () => {
    await rogue.close();
    rogueDir.remove();
  });
  await rogue.open();
  await waitFor('the rogue route to be refused', () => rogueLogs.has(/Authorization Violation/), {
    timeoutMs: 20_000,
    seen: () => rogueLogs.messages().slice(-5),
  });
  // Through the rogue server, a change reaches no stream.
  const nc = await connect({ servers: rogue.clientUrl });
  try {
    await assert.rejects(
      jetstream(nc).publish(subjectName(a.config.nats.subject_prefix, 1), new Uint8Array([0xa0]), {
        timeout: 2000,
      }),
    );
  } finally {
    await nc.close();
  }
  const storeDir = `${a.config.db_path}-nats`;
  assert.ok(
    !readFileSync(join(storeDir, 'nats-server.conf'), 'utf8').includes(SECRET),
    'no secret in the config',
  );
  assert.equal(statSync(join(storeDir, 'route-auth.conf')).mode & 0o777, 0o600);
});

test('a route port beyond loopback without route credentials is announced loudly', async () => {
  const [p] = await freePorts(1);
  const n = startClusterNode(3, `0.0.0.0:${p}`, [`nats://127.0.0.1:${p}`]);
  n.opened.catch(() => undefined); // a cluster of one waits for peers; stopped below
  await waitFor('the warning', () => n.logs.has(/beyond loopback WITHOUT route authentication/), {
    seen: () => n.logs.messages().slice(-5),
  });
  await n.node.close();
});

/** Starts a rogue nats-server routing to `port` without credentials or TLS; resolves once its routes fail. */
async function rogueRoutesTo(port: number, listenPort: number, refused: RegExp): Promise<EmbeddedNatsServer> {
  const rogueLogs = new LogCapture();
  const rogueDir = tempDir('hl-rogue-');
  const rogue = new EmbeddedNatsServer({
    storeDir: rogueDir.path,
    serverName: `rogue-${listenPort}`,
    clusterName: 'harmonylite',
    clusterAddress: `127.0.0.1:${listenPort}`,
    clusterPeers: [`nats://127.0.0.1:${port}`],
    jetstream: false,
    waitForJetStream: false,
    logger: createLogger({ verbose: true, format: 'json', nodeId: 99, destination: rogueLogs }),
  });
  stops.push(async () => {
    await rogue.close();
    rogueDir.remove();
  });
  await rogue.open();
  await waitFor('the rogue route to be refused', () => rogueLogs.has(refused), {
    timeoutMs: 20_000,
    seen: () => rogueLogs.messages().slice(-5),
  });
  return rogue;
}

test('server_config cluster {} (mutual TLS) is merged with -cluster-peers; route TLS keys too; a rogue without a certificate cannot join', async () => {
  const [pa, pb, pr] = await freePorts(3);
  const tlsDir = tempDir('hl-route-tls-');
  stops.push(async () => tlsDir.remove());
  const tls = generateRouteTls(tlsDir.path);
  // Node 1: route TLS in its own server_config; node 2: the same through [nats] route_* keys.
  const serverConfig = join(tlsDir.path, 'server.conf');
  writeFileSync(
    serverConfig,
    `# the operator's own cluster settings\ncluster {\n  # mutual TLS authenticates routes\n  tls {\n    cert_file: ${JSON.stringify(tls.certFile)}\n    key_file: ${JSON.stringify(tls.keyFile)}\n    ca_file: ${JSON.stringify(tls.caFile)}\n    verify: true\n  }\n  no_advertise: true\n}\n`,
  );
  const peers = [pa, pb].map((p) => `nats://127.0.0.1:${p}`);
  const a = startClusterNode(4, `127.0.0.1:${pa}`, peers, (c) => {
    c.nats.server_config = serverConfig;
  });
  const b = startClusterNode(5, `127.0.0.1:${pb}`, peers, (c) => {
    c.nats.route_cert_file = tls.certFile;
    c.nats.route_key_file = tls.keyFile;
    c.nats.route_ca_file = tls.caFile;
  });
  await Promise.all([a.opened, b.opened]);
  const generated = readFileSync(join(`${a.config.db_path}-nats`, 'nats-server.conf'), 'utf8');
  assert.match(generated, /verify: true/, 'the user cluster block is kept');
  assert.match(generated, /no_advertise: true/);

  const db = appConnection(a.config.db_path);
  db.prepare("INSERT INTO items VALUES (1, 'through TLS routes')").run();
  db.close();
  await waitFor(
    'the row on node 5',
    () => query(b.config.db_path, 'SELECT 1 FROM items WHERE id = 1').length === 1,
    { timeoutMs: 30_000 },
  );

  const rogue = await rogueRoutesTo(pa!, pr!, /Router connection closed/);
  const nc = await connect({ servers: rogue.clientUrl });
  try {
    await assert.rejects(
      jetstream(nc).publish(subjectName(a.config.nats.subject_prefix, 1), new Uint8Array([0xa0]), {
        timeout: 2000,
      }),
    );
  } finally {
    await nc.close();
  }
});

test('server_config route authorization with -cluster-peers URLs lacking credentials is refused at start', async () => {
  const [p] = await freePorts(1);
  const serverConfig = join(dir.path, 'route-authz.conf');
  writeFileSync(serverConfig, 'cluster {\n  authorization { user: route, password: "s3cr3t-value" }\n}\n');
  const n = startClusterNode(6, `127.0.0.1:${p}`, [`nats://127.0.0.1:${p}`], (c) => {
    c.nats.server_config = serverConfig;
  });
  await assert.rejects(
    n.opened,
    /requires route authorization, but the -cluster-peers URLs carry no credentials/,
  );
});
