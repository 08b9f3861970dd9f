/**
 * Builders of stream messages for applier-level tests: change records encoded
 * exactly as the publisher does (src/codec), optionally zstd-compressed, with
 * the publisher's Nats-Msg-Id format.
 */
import { compressBody, encodeRecords } from '../../src/codec/change-batch-codec.ts';
import type { ChangeRecord, ChangeType } from '../../src/codec/change-record.ts';
import { toWire, type SqlValue, type WireValue } from '../../src/codec/sql-value.ts';
import { RowDigest } from '../../src/codec/row-digest.ts';
import type { BatchApplierOptions, InboundMessage } from '../../src/replication/batch-applier.ts';
import { HybridClock } from '../../src/replication/hybrid-clock.ts';
import { formatMsgId, type BatchId } from '../../src/replication/msg-id.ts';

let changeId = 0;
/** Versions as a publisher takes them: each change newer than the one built before it. */
const clock = new HybridClock();

export const digest = await RowDigest.create();

/** A BatchApplier's options for tests: node 99 (the changes come from node 7), no local writes. */
export function applierOptions(over: Partial<BatchApplierOptions> = {}): BatchApplierOptions {
  return {
    includeTables: [],
    excludeTables: [],
    nodeId: 99,
    clock: new HybridClock().state,
    digest,
    localWrites: false,
    maxClockSkewMs: 60_000,
    ...over,
  };
}

/** One change record; values as read with safe integers (INTEGER = bigint, REAL = number). */
export function change(
  type: ChangeType,
  table: string,
  row: Record<string, SqlValue>,
  fromNodeId = 7,
  version = clock.next(),
): ChangeRecord {
  const wire: Record<string, WireValue> = {};
  for (const [k, v] of Object.entries(row)) wire[k] = toWire(v);
  return {
    FromNodeId: fromNodeId,
    Payload: {
      Id: ++changeId,
      Type: type,
      TableName: table,
      Row: wire,
      CreatedAt: Date.now(),
      Version: version,
    },
  };
}

export function message(
  seq: number,
  records: readonly ChangeRecord[],
  options: { id?: BatchId; compress?: boolean } = {},
): InboundMessage {
  const cbor = encodeRecords(records);
  return {
    seq,
    msgId: options.id === undefined ? undefined : formatMsgId(options.id),
    data: options.compress ? compressBody(cbor) : cbor,
  };
}

export function rawMessage(seq: number, data: Uint8Array, msgId?: string): InboundMessage {
  return { seq, msgId, data };
}

/** Five single-row inserts into `items` at stream positions 1..5 (origin 7, shard 1, batch seqs 1..5). */
export function crashBatch(): InboundMessage[] {
  return [1, 2, 3, 4, 5].map((i) =>
    message(i, [change('insert', 'items', { id: BigInt(i), name: `item ${i}` })], {
      id: { origin: 7, shard: 1, seq: i },
    }),
  );
}

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const BLOCK = 128 * 1024;

/** zstd RLE blocks of zeros: 4 bytes each, up to 128 KiB each once decoded. */
function rleBlocks(bytes: number): number[] {
  const out: number[] = [];
  for (let left = bytes; left > 0; left -= BLOCK) {
    const size = Math.min(BLOCK, left);
    const header = (size << 3) | (1 << 1) | (left <= BLOCK ? 1 : 0); // Block_Size | RLE | Last_Block
    out.push(header & 0xff, (header >> 8) & 0xff, (header >> 16) & 0xff, 0x00);
  }
  return out;
}

/** A zstd frame that declares `declared` bytes of content (8-byte field, single segment) and holds `actual`. */
export function declaredZstdFrame(declared: number, actual = declared): Uint8Array {
  const size = new Uint8Array(8);
  new DataView(size.buffer).setBigUint64(0, BigInt(declared), true);
  return new Uint8Array([...ZSTD_MAGIC, 0xe0, ...size, ...rleBlocks(actual)]);
}

/** A zstd frame that does not declare its size (128 KiB window): only decoding finds out how big it is. */
export function undeclaredZstdFrame(bytes: number): Uint8Array {
  return new Uint8Array([...ZSTD_MAGIC, 0x00, 0x38, ...rleBlocks(bytes)]);
}
