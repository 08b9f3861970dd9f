/**
 * A message whose decoding kills its shard worker (here: over the workers'
 * `worker_heap_mb`, with 2 million byte strings, within the CBOR walk's limits)
 * is applied alone after the first death and dead-lettered after the second,
 * instead of being retried forever; later writes replicate.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { compressBody } from '../../src/codec/change-batch-codec.ts';
import { DEAD_LETTERS } from '../../src/cdc/names.ts';
import { clusterBucket, subjectName } from '../../src/nats/naming.ts';
import { reservedSeqReader } from '../../src/replication/batch-seq-reservation.ts';
import { signBatch, SIGNATURE_HEADER } from '../../src/replication/batch-signature.ts';
import { NodeKey } from '../../src/replication/node-key.ts';
import { appConnection, startNode, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, counterValue, query } from './converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';
const dir = tempDir('hl-worker-death-');
let nats: TestNatsServer | undefined;
let nc: NatsConnection | undefined;
let sender: TestNode | undefined;
let receiver: TestNode | undefined;

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  sender = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [nats.url],
    schema: SCHEMA,
    configure: (c) => {
      c.replicate = false;
    },
  });
  receiver = await startNode({
    dir: dir.path,
    nodeId: 2,
    urls: [nats.url],
    schema: SCHEMA,
    configure: (c) => {
      c.publish = false;
      c.replication_log.worker_heap_mb = 48;
    },
  });
});

after(async () => {
  await nc?.close();
  await closeAll([sender, receiver], () => nats?.close(), dir.remove);
});

function write(id: number, v: string): void {
  const db = appConnection(sender!.dbPath);
  try {
    db.prepare('INSERT INTO items (id, v) VALUES (?, ?)').run(id, v);
  } finally {
    db.close();
  }
}

async function arrives(id: number, v: string): Promise<void> {
  await waitFor(
    `items ${id} = ${v} on node 2`,
    () => query<[string]>(receiver!.dbPath, 'SELECT v FROM items WHERE id = ?', id)[0]?.[0] === v,
    { timeoutMs: 30_000, seen: () => receiver!.logs.messages().slice(-6) },
  );
}

test('a message that kills its worker twice is dead-lettered, not retried forever', async () => {
  write(1, 'before');
  await arrives(1, 'before');
  // An array of 2,097,151 empty byte strings: one Uint8Array each once decoded, far over 48 MB of heap.
  const items = 2_097_151;
  const cbor = Buffer.alloc(5 + items, 0x40);
  cbor[0] = 0x9a;
  cbor.writeUInt32BE(items, 1);
  // Signed by node 1's key, so that the worker decodes it (a batch id above node 1's sequences,
  // within its reservation).
  const body = compressBody(cbor);
  const reserved = await reservedSeqReader(
    await jetstreamManager(nc!),
    clusterBucket(sender!.config.nats.stream_prefix),
  )(1);
  const msgID = `1-1-${reserved}`;
  const h = headers();
  h.set(SIGNATURE_HEADER, signBatch(NodeKey.loadOrCreate(NodeKey.pathFor(sender!.dbPath)), msgID, body));
  await jetstream(nc!).publish(subjectName(sender!.config.nats.subject_prefix, 1), body, {
    msgID,
    headers: h,
  });
  const reasons = await waitFor(
    'a dead letter on node 2',
    () => {
      const r = query<[string]>(receiver!.dbPath, `SELECT reason FROM ${DEAD_LETTERS}`).map((x) => x[0]);
      return r.length > 0 && r;
    },
    { timeoutMs: 60_000, seen: () => receiver!.logs.messages().slice(-6) },
  );
  assert.match(reasons[0]!, /killed the shard worker twice/);
  assert.equal(await counterValue(receiver!, 'deadLetters'), 1);
  write(2, 'after');
  await arrives(2, 'after');
  // The first death is retried (the message alone), the second dead-letters it.
  const retries = receiver!.logs.records.filter((r) => String(r.msg).includes('apply failed'));
  assert.equal(retries.length, 1, 'one retry');
  assert.match(String(retries[0]!.err), /worker died/);
  assert.ok(receiver!.logs.has('moved to the dead letters'));
});
