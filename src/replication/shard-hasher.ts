/**
 * Routes a change to its shard: xxhash64 over the table name and the primary-key
 * values, modulo the shard count, so every change of one row goes to one stream
 * (invariant 2). The byte encoding is canonical and type-tagged, so every node
 * computes the same shard for the same row. Pure after initialisation.
 */
import xxhash from 'xxhash-wasm';
import type { SqlValue } from '../codec/sql-value.ts';

export type ShardHasher = (table: string, key: readonly SqlValue[]) => number;

const textEncoder = new TextEncoder();

function keyBytes(table: string, key: readonly SqlValue[]): Uint8Array {
  const parts: Uint8Array[] = [textEncoder.encode(table)];
  let size = parts[0]!.length;
  for (const v of key) {
    let body: Uint8Array;
    let tag: number;
    if (v === null) {
      tag = 0x6e; // n
      body = new Uint8Array(0);
    } else if (typeof v === 'bigint' || (typeof v === 'number' && Number.isInteger(v))) {
      tag = 0x69; // i
      body = textEncoder.encode(BigInt(v).toString());
    } else if (typeof v === 'number') {
      tag = 0x72; // r
      body = new Uint8Array(new Float64Array([v]).buffer);
    } else if (typeof v === 'string') {
      tag = 0x74; // t
      body = textEncoder.encode(v);
    } else {
      tag = 0x62; // b
      body = v;
    }
    const head = new Uint8Array(5);
    head[0] = tag;
    new DataView(head.buffer).setUint32(1, body.length);
    parts.push(head, body);
    size += 5 + body.length;
  }
  const out = new Uint8Array(size);
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

export async function createShardHasher(shards: number): Promise<ShardHasher> {
  const { h64Raw } = await xxhash();
  if (shards === 1) return () => 0;
  const n = BigInt(shards);
  return (table, key) => Number(h64Raw(keyBytes(table, key)) % n);
}

/**
 * Names the routing above; nodes that route one key to different shards must
 * not share a cluster (checked at start, `cluster-settings.ts`). Change it with
 * any change to which shard a key maps to.
 */
export const SHARD_HASHING = 'xxhash64-type-tagged-v1';
