import type { InboundMessage } from './batch-applier.ts';
import { parseMsgId } from './msg-id.ts';

/** What the shard worker needs to skip replaying one of this node's own batches. */
export interface OwnClaim {
  /** Global-log id of the batch's first change: every change in it was committed at or after it. */
  readonly firstGlobalId: number;
  /** Changes in the batch (counted as applied when skipped). */
  readonly changes: number;
}

interface Entry extends OwnClaim {
  readonly payload: Uint8Array;
}

/** Registered batches (count, payload bytes) not consumed yet beyond which the oldest are forgotten (then replayed). */
const CAPACITY = 512;
const CAPACITY_BYTES = 32 * 1024 * 1024;

/**
 * The batches this process published, so that replaying them on this node can
 * be skipped when that is provably a no-op: a node's own changes are already in
 * its database, unless a replayed change overwrote them after they were
 * committed (then the replay must put them back, as every other node does in
 * stream order). Halves the apply work of a writing node.
 *
 * The proof is a watermark, shared with the shard workers: the highest
 * global-log id (SQLite AUTOINCREMENT, so ids only grow, in commit order) at the
 * time of the last transaction that wrote replayed rows, on any shard. A batch
 * whose first change has a higher id was committed after every replayed write:
 * no replay, cascade or UNIQUE displacement can have touched its rows since, so
 * its rows hold its changes or later local ones (which follow it in the stream;
 * a local change refused as too large never does, so its refusal raises the
 * watermark too). Anything else (an earlier process's batches, a payload that is not byte for
 * byte the one published, after a snapshot swap) is replayed as usual.
 */
export class OwnBatches {
  readonly nodeId: number;
  /** [0]: the watermark; shared memory, structured-cloned to the shard workers. */
  readonly watermark: BigInt64Array;
  readonly #entries = new Map<string, Entry>();
  #bytes = 0;

  constructor(nodeId: number) {
    this.nodeId = nodeId;
    this.watermark = new BigInt64Array(new SharedArrayBuffer(8));
  }

  /** No change committed up to `globalId` may be skipped. */
  raiseWatermark(globalId: number): void {
    raiseWatermark(this.watermark, globalId);
  }

  /** A batch was persisted in the outbox and is about to be published. */
  register(shard: number, seq: number, claim: OwnClaim, payload: Uint8Array): void {
    const key = `${shard}:${seq}`;
    this.#remove(key);
    this.#entries.set(key, { ...claim, payload });
    this.#bytes += payload.length;
    // A shard that stopped consuming (behind, held, failing) must not pin payloads without end.
    while (this.#entries.size > CAPACITY || this.#bytes > CAPACITY_BYTES)
      this.#remove(this.#entries.keys().next().value!);
  }

  #remove(key: string): Entry | undefined {
    const e = this.#entries.get(key);
    if (e !== undefined) {
      this.#entries.delete(key);
      this.#bytes -= e.payload.length;
    }
    return e;
  }

  /** True when the claimed batch's rows provably hold its changes (or later local ones). */
  inPlace(claim: OwnClaim): boolean {
    return claimInPlace(this.watermark, claim);
  }

  /** The database was swapped (snapshot restore): nothing registered so far may be skipped. */
  forget(): void {
    this.#entries.clear();
    this.#bytes = 0;
  }

  /** The claim to attach to an inbound message of `shard`, if it is a batch this process published. */
  claim(shard: number, m: InboundMessage): OwnClaim | undefined {
    const id = parseMsgId(m.msgId);
    if (id === undefined || id.origin !== this.nodeId || id.shard !== shard) return undefined;
    const e = this.#remove(`${shard}:${id.seq}`);
    if (e === undefined) return undefined;
    if (!sameBytes(e.payload, m.data)) return undefined;
    return { firstGlobalId: e.firstGlobalId, changes: e.changes };
  }
}

/** True when every change of the claimed batch was committed after the last replayed write. */
export function claimInPlace(watermark: BigInt64Array, claim: OwnClaim): boolean {
  return Atomics.load(watermark, 0) < BigInt(claim.firstGlobalId);
}

/** Raises a shared watermark (never lowers it). */
export function raiseWatermark(watermark: BigInt64Array, globalId: number): void {
  const v = BigInt(globalId);
  for (let seen = Atomics.load(watermark, 0); seen < v;) {
    const was = Atomics.compareExchange(watermark, 0, seen, v);
    if (was === seen) return;
    seen = was;
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.length).equals(b);
}
