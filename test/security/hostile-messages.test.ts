/**
 * Messages an attacker publishes on a change subject with a plain NATS client,
 * against real nodes (a CLI receiver): a well-formed batch under a forged batch id
 * (`1-1-9007199254740991`), unsigned, signed with another key, or carrying node 1's
 * signature of other bytes, is dead-lettered and never silences node 1; a 2 KB zstd
 * bomb of empty CBOR maps, even signed with node 1's own key, leaves the receiving
 * process's memory bounded and is dead-lettered. A batch correctly signed with node 1's
 * key but a seq beyond node 1's reservation is dead-lettered too (node 1 not silenced),
 * and a signed batch below node 1's applied seq is dropped as a duplicate, counted in
 * health and metrics. Real writes replicate after each.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import { compressBody, encodeRecords, MAX_DECODED_BYTES } from '../../src/codec/change-batch-codec.ts';
import {
  keyFingerprint,
  rawPublicKey,
  signBatch,
  SIGNATURE_HEADER,
} from '../../src/replication/batch-signature.ts';
import { reservedSeqReader } from '../../src/replication/batch-seq-reservation.ts';
import { NodeKey } from '../../src/replication/node-key.ts';
import { change } from '../replication/apply-messages.ts';
import { DEAD_LETTERS } from '../../src/cdc/names.ts';
import { clusterBucket, streamName, subjectName } from '../../src/nats/naming.ts';
import {
  appConnection,
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
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query } from '../replication/converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT);';
/** The receiver's peak RSS must stay under this (the bomb took ~5 GB per node). */
const MAX_RSS_BYTES = 400 * 1024 * 1024;

const dir = tempDir('hl-hostile-');
let nats: TestNatsServer | undefined;
let nc: NatsConnection | undefined;
let sender: TestNode | undefined;
let receiver: CliNode | undefined;
let receiverDb = '';
let receiverHealth = '';
let receiverMetrics = '';

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address() as { port: number };
  await new Promise((r) => s.close(r));
  return port;
}

before(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  const configure = (c: { replication_log: { shards: number } }) => {
    c.replication_log.shards = 1;
  };
  sender = await startNode({ dir: dir.path, nodeId: 1, urls: [nats.url], schema: SCHEMA, configure });
  const config = nodeConfig({ dir: dir.path, nodeId: 2, urls: [nats.url], configure });
  config.snapshot.enabled = false;
  config.health_check.enable = true;
  config.health_check.bind = `127.0.0.1:${await freePort()}`;
  config.prometheus.enable = true;
  config.prometheus.bind = `127.0.0.1:${await freePort()}`;
  receiverHealth = `http://${config.health_check.bind}${config.health_check.path}`;
  receiverMetrics = `http://${config.prometheus.bind}/metrics`;
  createDatabase(config.db_path, SCHEMA);
  receiverDb = config.db_path;
  receiver = spawnCli(['-config', writeConfigFile(config, join(dir.path, 'node-2.toml'))]);
});

after(async () => {
  if (receiver !== undefined && receiver.child.exitCode === null) {
    receiver.kill('SIGTERM');
    await receiver.exited;
  }
  await nc?.close();
  await closeAll([sender], () => nats?.close(), dir.remove);
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
    `items ${id} = ${v} on the receiver`,
    () => query<[string]>(receiverDb, 'SELECT v FROM items WHERE id = ?', id)[0]?.[0] === v,
    { timeoutMs: 30_000, seen: () => receiver!.output.slice(-6) },
  );
}

/** Resident and peak resident memory of a process, bytes (/proc/PID/status). */
function memory(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

/** The batch seq node 1 has reserved, from the cluster bucket. */
async function reservedSeq(): Promise<number> {
  const bucket = clusterBucket(sender!.config.nats.stream_prefix);
  const v = await reservedSeqReader(await jetstreamManager(nc!), bucket)(1);
  assert.ok(v !== undefined && v > 0, `node 1 reserved seqs: ${v}`);
  return v;
}

/** Publishes `payload` as a batch of node 1 on shard 1, signed with node 1's own key file. */
async function publishSigned(msgId: string, payload: Uint8Array): Promise<void> {
  const h = headers();
  h.set(SIGNATURE_HEADER, signBatch(NodeKey.loadOrCreate(NodeKey.pathFor(sender!.dbPath)), msgId, payload));
  await jetstream(nc!).publish(subjectName(sender!.config.nats.subject_prefix, 1), payload, {
    msgID: msgId,
    headers: h,
  });
}

async function metricValue(name: string): Promise<number> {
  const text = await (await fetch(receiverMetrics)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{shard="1"}`));
  return Number(line?.split(' ').pop() ?? 0);
}

function deadLetterReasons(): string[] {
  return query<[string]>(receiverDb, `SELECT reason FROM ${DEAD_LETTERS} ORDER BY id`).map((r) => r[0]);
}

/** 64 MiB (the decompression cap) of CBOR: one array of empty maps, one byte each. */
function emptyMapsBomb(): Uint8Array {
  const cbor = Buffer.alloc(MAX_DECODED_BYTES, 0xa0);
  cbor[0] = 0x9a;
  cbor.writeUInt32BE(MAX_DECODED_BYTES - 5, 1);
  return compressBody(cbor, 19);
}

test('a 2 KB zstd bomb of empty CBOR maps is dead-lettered with bounded memory; later writes replicate', async () => {
  write(1, 'before');
  await arrives(1, 'before');
  const pid = receiver!.child.pid!;
  const bomb = emptyMapsBomb();
  assert.ok(bomb.length < 4096, `bomb is ${bomb.length} bytes`);
  // Signed with node 1's own key (an attacker who has it): decoding limits hold without signatures.
  // Above node 1's sequences (not a duplicate), within its reservation (not refused for its seq).
  const msgId = `1-1-${await reservedSeq()}`;
  const before = deadLetterReasons().length;
  await publishSigned(msgId, bomb);
  // Sampled while it is handled: a receiver that decodes the bomb grows by gigabytes within seconds.
  const seen = await waitFor(
    'the bomb in the receiver dead letters (or its RSS over the limit)',
    () => {
      const { rss } = memory(pid);
      if (rss > MAX_RSS_BYTES) return { rss, reasons: [] };
      const reasons = deadLetterReasons().slice(before);
      return reasons.length > 0 && { rss, reasons };
    },
    { timeoutMs: 30_000, seen: () => ({ memory: memory(pid), log: receiver!.output.slice(-6) }) },
  );
  if (seen.rss > MAX_RSS_BYTES) receiver!.kill('SIGKILL');
  assert.ok(seen.rss <= MAX_RSS_BYTES, `receiver RSS ${Math.round(seen.rss / 2 ** 20)} MB`);
  const reasons = seen.reasons;
  assert.match(reasons[0]!, /CBOR/);
  write(20, 'after the bomb');
  await arrives(20, 'after the bomb');
  const { peak } = memory(pid);
  assert.ok(peak < MAX_RSS_BYTES, `receiver peak RSS ${Math.round(peak / 2 ** 20)} MB`);
  assert.ok(
    receiver!.output.some((l) => l.includes('moved to the dead letters')),
    'the dead letter is logged',
  );
});

test('forged batches of node 1 (unsigned, foreign key, moved signature) are dead-lettered; node 1 still replicates', async () => {
  write(10, 'before the forgeries');
  await arrives(10, 'before the forgeries');
  const subject = subjectName(sender!.config.nats.subject_prefix, 1);
  const js = jetstream(nc!);
  const pwned = encodeRecords([change('insert', 'items', { id: 42n, v: 'pwned' }, 1)]);
  // Node 1's real signature header, taken from the stream (it signs another batch id and payload).
  const jsm = await jetstreamManager(nc!);
  // The stream's first message is node 1's first batch.
  const real = await jsm.streams.getMessage(streamName(sender!.config.nats.stream_prefix, 1), { seq: 1 });
  assert.match(real?.header.get('Nats-Msg-Id') ?? '', /^1-1-/);
  const realSignature = real!.header.get(SIGNATURE_HEADER);
  assert.match(realSignature, /^[0-9a-f]{16}\./, 'node 1 signs its batches');
  const { privateKey } = generateKeyPairSync('ed25519');
  const stranger = { privateKey, fingerprint: keyFingerprint(rawPublicKey(privateKey)) };
  const forgeries: { signature?: string; reason: RegExp }[] = [
    { reason: /not signed/ },
    { signature: signBatch(stranger, '1-1-9007199254740990', pwned), reason: /no registered key/ },
    { signature: realSignature, reason: /bad signature/ },
  ];
  const before = deadLetterReasons().length;
  for (const f of forgeries) {
    const h = headers();
    if (f.signature !== undefined) h.set(SIGNATURE_HEADER, f.signature);
    // The highest sequence a batch id may name, less one per publish (JetStream drops repeated ids).
    const msgID = `1-1-${Number.MAX_SAFE_INTEGER - forgeries.indexOf(f)}`;
    await js.publish(subject, pwned, { msgID, headers: h });
  }
  write(11, 'after the forgeries');
  await arrives(11, 'after the forgeries');
  const reasons = deadLetterReasons().slice(before);
  assert.equal(reasons.length, forgeries.length, JSON.stringify(reasons));
  forgeries.forEach((f, i) => assert.match(reasons[i]!, f.reason));
  assert.deepEqual(
    query(receiverDb, 'SELECT v FROM items WHERE id = 42'),
    [],
    'the forged row is not applied',
  );
  // Logged before the dead letter commits, written to stdout asynchronously.
  await receiver!.waitForOutput(/origin not verified/);
});

test('a batch signed with node 1 key but a seq beyond its reservation is dead-lettered; node 1 still replicates', async () => {
  write(30, 'before the leap');
  await arrives(30, 'before the leap');
  const ceiling = await reservedSeq();
  const before = deadLetterReasons().length;
  const leap = encodeRecords([change('insert', 'items', { id: 43n, v: 'leap' }, 1)]);
  await publishSigned(`1-1-${ceiling + 1_000_000_000_000}`, leap);
  await waitFor('the leap in the dead letters', () => deadLetterReasons().length > before, {
    timeoutMs: 30_000,
    seen: () => receiver!.output.slice(-6),
  });
  assert.match(deadLetterReasons()[before]!, /beyond reservation: node 1 has reserved batch seqs up to/);
  write(31, 'after the leap');
  await arrives(31, 'after the leap');
  assert.deepEqual(query(receiverDb, 'SELECT v FROM items WHERE id = 43'), [], 'the leap is not applied');
  assert.equal(await metricValue('harmonylite_origin_seq_refused_total'), 1);
  await receiver!.waitForOutput(/origin seq beyond reservation/);
});

test('a signed batch below node 1 applied seq is dropped as a duplicate, counted in health and metrics', async () => {
  write(32, 'latest');
  await arrives(32, 'latest');
  const jsm = await jetstreamManager(nc!);
  const last = await jsm.streams.getMessage(streamName(sender!.config.nats.stream_prefix, 1), {
    last_by_subj: subjectName(sender!.config.nats.subject_prefix, 1),
  });
  const lastId = /^1-1-(\d+)$/.exec(last?.header.get('Nats-Msg-Id') ?? '');
  assert.ok(lastId !== null, `last batch of node 1: ${last?.header.get('Nats-Msg-Id')}`);
  const duplicatesBefore = await metricValue('harmonylite_duplicates_skipped_total');
  const stale = encodeRecords([change('insert', 'items', { id: 44n, v: 'stale' }, 1)]);
  await publishSigned(`1-1-${Number(lastId[1]) - 1}`, stale);
  const health = await waitFor(
    'the duplicate counted in health',
    async () => {
      const body = (await (await fetch(receiverHealth)).json()) as {
        shards: { shard: number; duplicates_skipped: number }[];
      };
      const s1 = body.shards.find((s) => s.shard === 1);
      return s1 !== undefined && s1.duplicates_skipped > 0 && s1;
    },
    { timeoutMs: 30_000, seen: () => receiver!.output.slice(-6) },
  );
  assert.ok(health.duplicates_skipped >= 1);
  assert.ok((await metricValue('harmonylite_duplicates_skipped_total')) > duplicatesBefore);
  assert.deepEqual(
    query(receiverDb, 'SELECT v FROM items WHERE id = 44'),
    [],
    'the stale batch is not applied',
  );
});
