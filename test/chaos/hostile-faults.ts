/**
 * A hostile publisher on the change subjects, with a plain client: a forged
 * batch of a real node under the highest batch sequence (unsigned: no node
 * applies it, and the node's later batches still apply), and a zstd bomb of
 * empty CBOR maps signed with that node's own key under a batch seq within its
 * reservation (refused by the bounded decoding, not by its seq). Each must be dead-lettered on every node and nothing else.
 */
import { headers } from '@nats-io/transport-node';
import { compressBody, encodeRecords } from '../../src/codec/change-batch-codec.ts';
import { clusterBucket, subjectName } from '../../src/nats/naming.ts';
import { reservedSeqReader } from '../../src/replication/batch-seq-reservation.ts';
import { signBatch, SIGNATURE_HEADER } from '../../src/replication/batch-signature.ts';
import { NodeKey } from '../../src/replication/node-key.ts';
import { STREAM_PREFIX } from './chaos-cluster.ts';
import type { FaultContext } from './fault-context.ts';

const SUBJECT_PREFIX = 'harmonylite-change-log';
/** 8 MiB of empty maps: twice the items a message may hold. */
const BOMB_BYTES = 8 * 1024 * 1024;

export async function hostilePublisher(ctx: FaultContext): Promise<void> {
  const shard = 1 + Math.floor(ctx.schedule.rand() * ctx.shards);
  const node = ctx.schedule.pick(ctx.cluster.nodes);
  const js = ctx.jsm.jetstream();
  const subject = subjectName(SUBJECT_PREFIX, shard);
  const n = ctx.stats.hostileMessages.length;
  const forged = encodeRecords([
    {
      FromNodeId: node.id,
      Payload: {
        Id: 1,
        Type: 'insert',
        TableName: 'kv',
        Row: { k: -1 - n, v: 'forged', writer: node.id },
        CreatedAt: Date.now(),
      },
    },
  ]);
  const bombCbor = Buffer.alloc(BOMB_BYTES, 0xa0);
  bombCbor[0] = 0x9a;
  bombCbor.writeUInt32BE(BOMB_BYTES - 5, 1);
  const bomb = compressBody(bombCbor);
  const reserved = await reservedSeqReader(ctx.jsm, clusterBucket(STREAM_PREFIX))(node.id);
  const bombId = `${node.id}-${shard}-${(reserved ?? Number.MAX_SAFE_INTEGER) - 2 * n - 1}`;
  const signed = headers();
  signed.set(SIGNATURE_HEADER, signBatch(NodeKey.loadOrCreate(NodeKey.pathFor(node.dbPath)), bombId, bomb));
  const sent = [
    await js.publish(subject, forged, { msgID: `${node.id}-${shard}-${Number.MAX_SAFE_INTEGER - 2 * n}` }),
    await js.publish(subject, bomb, { msgID: bombId, headers: signed }),
  ];
  for (const ack of sent) ctx.stats.hostileMessages.push(`${shard}:${ack.seq}`);
  ctx.note(
    `hostile publisher on shard ${shard}: an unsigned batch of node ${node.id} claiming the highest sequence, and a ${bomb.length}-byte zstd bomb signed with its key within its reserved seqs (stream seqs ${sent.map((a) => a.seq).join(', ')})`,
  );
}
