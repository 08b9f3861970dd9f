/**
 * One shard's worker thread (piscina): replay of incoming batches (zstd, CBOR,
 * apply) against the worker's own SQLite connection. Thin: it
 * imports exact pure modules and the applier, never NATS or the AWS SDK.
 */
import { workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';
import { BatchApplier, type ApplyResult, type InboundMessage } from '../src/replication/batch-applier.ts';
import { RowDigest } from '../src/codec/row-digest.ts';
import { isSqliteBusy } from '../src/sqlite/sqlite-busy.ts';
import { setBusyTimeout } from '../src/sqlite/busy-timeout.ts';
import type { ShardWorkerData } from '../src/replication/shard-pool.ts';

const config = workerData as ShardWorkerData;
const digest = await RowDigest.create();
let db: Database.Database | undefined;
let applier: BatchApplier | undefined;
let schemaEpoch = -1;

function open(): BatchApplier {
  if (applier === undefined) {
    db = new Database(config.dbPath, { timeout: config.busyTimeoutMs });
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    // Replicas mirror states the origin already checked; parents and children may travel on different shards.
    db.pragma('foreign_keys = OFF');
    db.pragma('recursive_triggers = OFF');
    applier = new BatchApplier(db, {
      includeTables: config.includeTables,
      excludeTables: config.excludeTables,
      nodeId: config.nodeId,
      clock: config.clock,
      digest,
      localWrites: config.localWrites,
      maxClockSkewMs: config.maxClockSkewMs,
    });
  }
  return applier;
}

export function apply(task: {
  shard: number;
  messages: InboundMessage[];
  schemaEpoch: number;
  lockWaitMs?: number;
}): ApplyResult | undefined {
  const a = open();
  if (task.schemaEpoch !== schemaEpoch) {
    a.invalidateSchema();
    schemaEpoch = task.schemaEpoch;
  }
  if (task.lockWaitMs === undefined) return a.apply(task.shard, task.messages);
  // A short wait: the caller retries without holding the writer queue, so the publisher's
  // writes can go in between (an application that commits back to back leaves few openings).
  setBusyTimeout(db!, task.lockWaitMs);
  try {
    return a.apply(task.shard, task.messages);
  } catch (err) {
    if (isSqliteBusy(err)) return undefined;
    throw err;
  } finally {
    setBusyTimeout(db!, config.busyTimeoutMs);
  }
}

export function position(task: { shard: number }): number {
  return open().position(task.shard);
}

export function deadLetter(task: { shard: number; message: InboundMessage; reason: string }): void {
  open().deadLetter(task.shard, task.message, task.reason);
}

export function close(): void {
  db?.close();
  db = undefined;
  applier = undefined;
}
