/**
 * `[replication_log] trusted_keys`: with the list set, a node verifies batches
 * only against the listed keys. A client with write access to the key bucket
 * registers a stranger's key under node 1 and publishes a batch signed with it:
 * a node trusting on first use applies it, a node with the list dead-letters it
 * and still applies node 1's real batches. A node whose own key is not listed
 * refuses to start; a malformed entry is a config error.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { encodeRecords } from '../../src/codec/change-batch-codec.ts';
import { DEAD_LETTERS } from '../../src/cdc/names.ts';
import { ConfigError } from '../../src/config/config-error.ts';
import { parseConfig } from '../../src/config/load-config.ts';
import { clusterBucket, nodeKeyBucket, subjectName } from '../../src/nats/naming.ts';
import { reservedSeqReader } from '../../src/replication/batch-seq-reservation.ts';
import {
  keyFingerprint,
  rawPublicKey,
  signBatch,
  SIGNATURE_HEADER,
} from '../../src/replication/batch-signature.ts';
import { NodeKey } from '../../src/replication/node-key.ts';
import { formatTrustedKeyEntry } from '../../src/config/trusted-key-entry.ts';
import { appConnection, nodeConfig, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { change } from '../replication/apply-messages.ts';
import { closeAll, query } from '../replication/converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';
const dir = tempDir('hl-trusted-');
let nats: TestNatsServer | undefined;
let nc: NatsConnection | undefined;
const nodes: TestNode[] = [];

/** The trusted_keys entry of node `id`'s key file (created now if missing, as a node would). */
function entryOf(id: number): string {
  const key = NodeKey.loadOrCreate(
    NodeKey.pathFor(nodeConfig({ dir: dir.path, nodeId: id, urls: [] }).db_path),
  );
  return formatTrustedKeyEntry(id, key.publicKey);
}

function start(id: number, trusted: string[]): Promise<TestNode> {
  return startNode({
    dir: dir.path,
    nodeId: id,
    urls: [nats!.url],
    schema: SCHEMA,
    configure: (c) => {
      c.snapshot.enabled = false;
      c.replication_log.trusted_keys = trusted;
    },
  });
}

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
});

after(async () => {
  await nc?.close();
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

test('with trusted_keys, a key registered in the bucket by a stranger is refused; node 1 still replicates', async () => {
  const list = [entryOf(1), entryOf(2)];
  const sender = await start(1, list);
  nodes.push(sender);
  const listed = await start(2, list);
  nodes.push(listed);
  const tofu = await start(3, []);
  nodes.push(tofu);

  // A client that may write the key bucket registers its own key as node 1's.
  const { privateKey } = generateKeyPairSync('ed25519');
  const raw = rawPublicKey(privateKey);
  const stranger = { privateKey, fingerprint: keyFingerprint(raw) };
  const kv = await new Kvm(nc!).open(nodeKeyBucket(sender.config.nats.stream_prefix));
  await kv.put(`1.${stranger.fingerprint}`, raw);
  const reserved = await reservedSeqReader(
    await jetstreamManager(nc!),
    clusterBucket(sender.config.nats.stream_prefix),
  )(1);
  const payload = encodeRecords([change('insert', 'items', { id: 42n, v: 'pwned' }, 1)]);
  const msgID = `1-1-${reserved}`; // within node 1's reservation: only the key decides
  const h = headers();
  h.set(SIGNATURE_HEADER, signBatch(stranger, msgID, payload));
  await jetstream(nc!).publish(subjectName(sender.config.nats.subject_prefix, 1), payload, {
    msgID,
    headers: h,
  });

  await waitFor(
    'the forged row on the trust-on-first-use node',
    () => query(tofu.dbPath, 'SELECT v FROM items WHERE id = 42').length === 1,
  );
  await waitFor(
    'the forged batch in the dead letters of the node with trusted_keys',
    () => query<[string]>(listed.dbPath, `SELECT reason FROM ${DEAD_LETTERS}`)[0]?.[0],
  ).then((reason) => assert.match(reason, /no registered key/));
  assert.deepEqual(query(listed.dbPath, 'SELECT v FROM items WHERE id = 42'), []);
  assert.ok(listed.logs.has('trusted_keys'), 'the node says it verifies against trusted_keys');

  const db = appConnection(sender.dbPath);
  db.prepare("INSERT INTO items VALUES (1, 'real')").run();
  db.close();
  await waitFor(
    'node 1 real row on node 2',
    () => query(listed.dbPath, 'SELECT v FROM items WHERE id = 1').length === 1,
  );
});

test('a node whose own key is not in trusted_keys refuses to start, naming the entry to add', async () => {
  const own = entryOf(4);
  await assert.rejects(start(4, [entryOf(1)]), (err: unknown) => {
    assert.ok(err instanceof ConfigError, String(err));
    assert.match(err.message, /not listed in \[replication_log\] trusted_keys/);
    assert.ok(err.hint?.includes(own), err.hint);
    return true;
  });
});

test('a malformed trusted_keys entry is a config error', () => {
  const good = entryOf(1);
  for (const bad of ['1:short', `x:${good.slice(2)}`, `0:${good.slice(2)}`, good.replace(':', ' ')]) {
    assert.throws(
      () =>
        parseConfig(
          `[replication_log]\ntrusted_keys = [${JSON.stringify(good)}, ${JSON.stringify(bad)}]\n`,
          dir.path,
        ),
      (err: unknown) =>
        err instanceof ConfigError && /replication_log\.trusted_keys.*entry 1/.test(err.message),
    );
  }
  const ok = parseConfig(`[replication_log]\ntrusted_keys = [${JSON.stringify(good)}]\n`, dir.path);
  assert.deepEqual(ok.replication_log.trusted_keys, [good]);
});
