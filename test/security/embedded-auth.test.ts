/**
 * The embedded nats-server is locked by default: with no `server_config`, a
 * client without credentials cannot connect (so cannot publish a change); the
 * node's generated credentials are in a 0600 file next to the store (a
 * `[nats]` snippet), and the server's generated config holds no secret.
 * Configured `user_name` / `user_password` are enforced instead.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { AuthorizationError, connect } from '@nats-io/transport-node';
import { parse as parseToml } from 'smol-toml';
import { subjectName } from '../../src/nats/naming.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';
const dir = tempDir('hl-embedded-auth-');
const nodes: TestNode[] = [];
after(async () => {
  for (const n of nodes) await n.close();
  dir.remove();
});

/** The embedded server's URL and credentials file, from the node's start log line. */
function started(node: TestNode): { url: string; credentials: string | undefined } {
  const r = node.logs.records.find((x) => x.msg === 'embedded nats-server started');
  assert.ok(r !== undefined, 'the start line');
  return { url: String(r.url), credentials: r.credentials === undefined ? undefined : String(r.credentials) };
}

async function refused(url: string, auth: { user?: string; pass?: string } = {}): Promise<void> {
  await assert.rejects(
    connect({ servers: url, reconnect: false, timeout: 3000, ...auth }),
    (err: unknown) => err instanceof AuthorizationError,
  );
}

test('a client without credentials cannot connect to the embedded server; the generated ones work', async () => {
  const node = await startNode({ dir: dir.path, nodeId: 1, urls: [], schema: SCHEMA });
  nodes.push(node);
  const { url, credentials } = started(node);
  await refused(url);
  await refused(url, { user: 'harmonylite', pass: 'guess' });

  assert.ok(credentials !== undefined, 'generated credentials are logged by path');
  assert.equal(statSync(credentials).mode & 0o777, 0o600);
  const { nats } = parseToml(readFileSync(credentials, 'utf8')) as {
    nats: { user_name: string; user_password: string };
  };
  assert.ok(nats.user_password.length >= 32);
  const storeDir = dirname(credentials);
  for (const name of readdirSync(storeDir).filter((f) => f.endsWith('.conf'))) {
    const text = readFileSync(join(storeDir, name), 'utf8');
    if (name === 'nats-server.conf')
      assert.ok(!text.includes(nats.user_password), 'no secret in nats-server.conf');
    else assert.equal(statSync(join(storeDir, name)).mode & 0o777, 0o600, `${name} is private`);
  }

  const nc = await connect({ servers: url, user: nats.user_name, pass: nats.user_password });
  try {
    const ack = await jetstream(nc).publish(
      subjectName(node.config.nats.subject_prefix, 1),
      new Uint8Array([1]),
    );
    assert.ok(ack.seq > 0, 'the node credentials publish');
  } finally {
    await nc.close();
  }
});

test('configured user_name and user_password are enforced by the embedded server', async () => {
  const node = await startNode({
    dir: dir.path,
    nodeId: 2,
    urls: [],
    schema: SCHEMA,
    configure: (c) => {
      c.nats.user_name = 'app';
      c.nats.user_password = 'configured-secret';
    },
  });
  nodes.push(node);
  const { url, credentials } = started(node);
  assert.equal(credentials, undefined, 'nothing generated');
  await refused(url);
  const nc = await connect({ servers: url, user: 'app', pass: 'configured-secret' });
  await nc.close();
});
