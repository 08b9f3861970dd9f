/**
 * docs/nats-server-locked-down.conf, run as written (only its listen address,
 * monitoring port and store directory substituted; passwords come from the
 * environment, as the file says): cluster nodes replicate and use the
 * snapshot bucket; the `observer` user reads stream information but cannot
 * publish to a change subject (permission violation, no row reaches any node)
 * nor read the snapshot object store or the changes; an anonymous client
 * cannot connect. And node credentials alone cannot forge a batch: an
 * unsigned one is dead-lettered on every node (verify_origins).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Objm } from '@nats-io/obj';
import {
  AuthorizationError,
  connect,
  PermissionViolationError,
  type NatsConnection,
} from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { encodeRecords } from '../../src/codec/change-batch-codec.ts';
import { silentLogger } from '../../src/logger.ts';
import { EmbeddedNatsServer } from '../../src/nats/embedded-server.ts';
import { DEAD_LETTERS } from '../../src/cdc/names.ts';
import { snapshotBucket, streamName, subjectName } from '../../src/nats/naming.ts';
import { REPO_ROOT, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { query } from '../replication/converge-helpers.ts';
import { secret } from './nats-credentials.ts';
import { assertReplicates, startPair } from './secure-nodes.ts';

const CONFIG = join(REPO_ROOT, 'docs', 'nats-server-locked-down.conf');
const SUBJECT_PREFIX = 'harmonylite-change-log';
const STREAM_PREFIX = 'harmonylite-changes';
const CHANGE_SUBJECT = subjectName(SUBJECT_PREFIX, 1);
const CHANGE_STREAM = streamName(STREAM_PREFIX, 1);
const BUCKET = snapshotBucket(STREAM_PREFIX, '');

const dir = tempDir('hl-locked-down-');
const nodePassword = secret('node-pw');
const observerPassword = secret('observer-pw');
let server: EmbeddedNatsServer | undefined;
let nodes: TestNode[] = [];
const clients: NatsConnection[] = [];

before(async () => {
  const text = readFileSync(CONFIG, 'utf8');
  const substituted = text
    .replace('listen: 0.0.0.0:4222', 'listen: 127.0.0.1:-1')
    .replace(/^http: .*$/m, '# http: (off in the test)')
    .replace('"/var/lib/nats/jetstream"', JSON.stringify(join(dir.path, 'jetstream')));
  assert.notEqual(substituted, text);
  const file = join(dir.path, 'locked-down.conf');
  writeFileSync(file, substituted);
  // As in production, the passwords reach nats-server through its environment.
  process.env.HARMONYLITE_NODE_PASSWORD = nodePassword;
  process.env.HARMONYLITE_OBSERVER_PASSWORD = observerPassword;
  server = new EmbeddedNatsServer({
    storeDir: join(dir.path, 'server'),
    serverName: 'locked-down',
    bindAddress: '127.0.0.1:0',
    configFile: file,
    logger: silentLogger(),
    probe: { user: 'harmonylite-node', pass: nodePassword },
  });
  try {
    await server.open();
  } finally {
    delete process.env.HARMONYLITE_NODE_PASSWORD;
    delete process.env.HARMONYLITE_OBSERVER_PASSWORD;
  }
  nodes = await startPair(dir.path, [server.clientUrl], (c) => {
    c.nats.user_name = 'harmonylite-node';
    c.nats.user_password = nodePassword;
    c.nats.subject_prefix = SUBJECT_PREFIX;
    c.nats.stream_prefix = STREAM_PREFIX;
  });
});

after(async () => {
  await Promise.all(clients.map((c) => c.close().catch(() => undefined)));
  await Promise.all(nodes.map((n) => n.close()));
  await server?.close();
  dir.remove();
});

async function client(user: string, pass: string): Promise<NatsConnection> {
  const nc = await connect({ servers: server!.clientUrl, user, pass, reconnect: false, timeout: 5000 });
  clients.push(nc);
  return nc;
}

function noteIds(node: TestNode): number[] {
  const db = new Database(node.dbPath, { readonly: true });
  try {
    return db.prepare('SELECT id FROM notes ORDER BY id').pluck().all() as number[];
  } finally {
    db.close();
  }
}

/** A well-formed change batch inserting note `id`: exactly what a node would publish. */
function forgedChange(id: number): Uint8Array {
  return encodeRecords([
    {
      FromNodeId: 666,
      Payload: {
        Id: 1,
        Type: 'insert',
        TableName: 'notes',
        Row: { id, body: 'forged' },
        CreatedAt: Date.now(),
      },
    },
  ]);
}

/** nats.js reports a refused request as a RequestError caused by a PermissionViolationError. */
function isPermissionViolation(err: unknown): boolean {
  return err instanceof PermissionViolationError || (err as Error)?.cause instanceof PermissionViolationError;
}

async function changeCount(jsm: JetStreamManager): Promise<number> {
  return (await jsm.streams.info(CHANGE_STREAM)).state.messages;
}

test('cluster nodes replicate through the locked-down server', async () => {
  const [a, b] = nodes as [TestNode, TestNode];
  await assertReplicates(a, b, 1);
  await assertReplicates(b, a, 2);
});

test('cluster nodes may write and read the snapshot bucket', async () => {
  const nc = await client('harmonylite-node', nodePassword);
  // The nodes create the bucket in the background once started (snapshots are on by default).
  const objm = new Objm(jetstream(nc));
  const os = await waitFor(`the snapshot bucket ${BUCKET}`, () => objm.open(BUCKET), { timeoutMs: 20_000 });
  await os.putBlob({ name: 'permission-probe' }, new TextEncoder().encode('a node may write this'));
  const back = await os.getBlob('permission-probe');
  assert.equal(new TextDecoder().decode(back ?? new Uint8Array()), 'a node may write this');
});

test('the observer reads stream information, but cannot publish a change', { timeout: 30_000 }, async () => {
  const nc = await client('observer', observerPassword);
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  const before = await changeCount(jsm);
  assert.ok(before >= 2, `the observer sees the stream's message count (${before})`);

  // Through JetStream: the server refuses the publish, nothing is stored.
  await assert.rejects(
    jetstream(nc).publish(CHANGE_SUBJECT, forgedChange(900), { timeout: 3000 }),
    isPermissionViolation,
  );

  // As a core publish: reported asynchronously as a permission error.
  const violation = (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'error' && s.error instanceof PermissionViolationError) return s.error;
    }
    return undefined;
  })();
  nc.publish(CHANGE_SUBJECT, forgedChange(901));
  const err = await violation; // (the test's timeout bounds the wait)
  assert.ok(err instanceof PermissionViolationError);
  assert.match(err.message, /Permissions Violation for Publish to "harmonylite-change-log-1"/);
  assert.equal(err.operation, 'publish');

  assert.equal(await changeCount(jsm), before, 'no message reached the change stream');
  // A later legitimate write arrives everywhere; the forged rows never do.
  const [a, b] = nodes as [TestNode, TestNode];
  await assertReplicates(a, b, 3);
  for (const n of nodes) assert.deepEqual(noteIds(n), [1, 2, 3], `notes on node ${n.config.node_id}`);
});

test('the observer cannot read the snapshot bucket nor the changes', async () => {
  const nc = await client('observer', observerPassword);
  const js = jetstream(nc, { timeout: 3000 });
  await assert.rejects(
    (async () => {
      const os = await new Objm(js).open(BUCKET);
      return os.getBlob('permission-probe');
    })(),
    isPermissionViolation,
  );
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  await assert.rejects(
    jsm.streams.getMessage(CHANGE_STREAM, { seq: 1 }),
    isPermissionViolation,
    'reading a change message',
  );
  await assert.rejects(
    js.consumers.get(CHANGE_STREAM).then((c) => c.next({ expires: 1000 })),
    isPermissionViolation,
    'consuming the change stream',
  );
});

test('a client without credentials cannot connect', async () => {
  await assert.rejects(
    connect({ servers: server!.clientUrl, reconnect: false, timeout: 3000 }),
    (err: unknown) => err instanceof AuthorizationError,
  );
});

test('node credentials alone do not forge a batch: an unsigned one is dead-lettered on every node', async () => {
  // Node credentials in the wrong hands may publish, but not sign as a node (verify_origins).
  const nc = await client('harmonylite-node', nodePassword);
  await jetstream(nc).publish(CHANGE_SUBJECT, forgedChange(777), { msgID: '1-1-9007199254740991' });
  for (const n of nodes) {
    await waitFor(
      `the forged batch in node ${n.config.node_id}'s dead letters`,
      () =>
        query<[string]>(n.dbPath, `SELECT reason FROM ${DEAD_LETTERS}`).some(([r]) => /not signed/.test(r)),
      { timeoutMs: 20_000 },
    );
    assert.ok(!noteIds(n).includes(777), `the forged note is not on node ${n.config.node_id}`);
  }
  const [a, b] = nodes as [TestNode, TestNode];
  await assertReplicates(a, b, 4);
});
