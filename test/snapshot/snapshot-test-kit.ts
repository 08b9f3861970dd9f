/**
 * Shared fixtures of the snapshot tests: databases with capture installed, a
 * tiny tmpfs for full-disk tests, and readers of what a database holds.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { ORIGIN_SEQS, POSITIONS, quoteIdent as q } from '../../src/cdc/names.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import type { Config } from '../../src/config/config.ts';
import { shardNumbers, streamName } from '../../src/nats/naming.ts';

export const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, blob BLOB);';

/** A WAL database with the items table, capture installed, `rows` rows written (so pending changes exist). */
export function capturedDatabase(path: string, rows: number, options: { blobBytes?: number } = {}): void {
  const db = new Database(path);
  try {
    db.pragma('journal_mode = WAL');
    db.exec(SCHEMA);
    installCapture(db, new TableFilter([], []), { captureWrites: true });
    const insert = db.prepare('INSERT INTO items (id, name, blob) VALUES (?, ?, randomblob(?))');
    db.transaction(() => {
      for (let i = 1; i <= rows; i++) insert.run(i, `item-${i}`, options.blobBytes ?? 16);
    })();
  } finally {
    db.close();
  }
}

export function setPositions(
  path: string,
  positions: Record<number, number>,
  originSeqs: [number, number, number][] = [],
): void {
  const db = new Database(path);
  try {
    const now = Date.now();
    for (const [shard, seq] of Object.entries(positions))
      db.prepare(
        `INSERT OR REPLACE INTO ${q(POSITIONS)} (shard, stream_seq, updated_at) VALUES (?, ?, ?)`,
      ).run(Number(shard), seq, now);
    for (const [origin, shard, seq] of originSeqs)
      db.prepare(`INSERT OR REPLACE INTO ${q(ORIGIN_SEQS)} (origin, shard, seq) VALUES (?, ?, ?)`).run(
        origin,
        shard,
        seq,
      );
  } finally {
    db.close();
  }
}

/** Names in sqlite_schema, by type. */
export function schemaNames(path: string): { tables: string[]; triggers: string[] } {
  const db = new Database(path, { readonly: true });
  try {
    const names = (type: string) =>
      db.prepare('SELECT name FROM sqlite_schema WHERE type = ? ORDER BY name').pluck().all(type) as string[];
    return { tables: names('table'), triggers: names('trigger') };
  } finally {
    db.close();
  }
}

export function count(path: string, sql: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare(sql).pluck().get() as number;
  } finally {
    db.close();
  }
}

/**
 * Mounts a tmpfs of `sizeBytes` at `dir` (needs root). Returns its unmounter,
 * or undefined when mounting is not possible here.
 */
export function mountTinyTmpfs(dir: string, sizeBytes: number): (() => void) | undefined {
  mkdirSync(dir, { recursive: true });
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    return undefined;
  }
  return () => execFileSync('umount', [dir], { stdio: 'ignore' });
}

/** Snapshot-friendly cluster settings: small streams that roll over quickly, one change per message. */
export function smallStreams(storeDir: string, more?: (c: Config) => void): (c: Config) => void {
  return (c) => {
    c.replication_log.shards = 2;
    c.replication_log.max_entries = 50;
    c.replication_log.max_batch_changes = 1;
    c.snapshot.store = 'local';
    c.snapshot.local.path = storeDir;
    c.snapshot.keep = 3;
    more?.(c);
  };
}

export interface StreamRangeSeen {
  readonly shard: number;
  readonly firstSeq: number;
  readonly lastSeq: number;
}

/** first_seq and last_seq of every shard stream. */
export async function streamRanges(url: string, config: Config): Promise<StreamRangeSeen[]> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const out: StreamRangeSeen[] = [];
    for (const shard of shardNumbers(config.replication_log.shards)) {
      const info = await jsm.streams.info(streamName(config.nats.stream_prefix, shard));
      out.push({ shard, firstSeq: info.state.first_seq, lastSeq: info.state.last_seq });
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** Writes rows `from..to` one per transaction (so one message each with max_batch_changes = 1). */
export function writeRows(dbPath: string, from: number, to: number, prefix = 'row'): void {
  const db = new Database(dbPath);
  try {
    db.pragma('busy_timeout = 5000');
    const insert = db.prepare('INSERT OR REPLACE INTO items (id, name, blob) VALUES (?, ?, randomblob(32))');
    for (let i = from; i <= to; i++) insert.run(i, `${prefix}-${i}`);
  } finally {
    db.close();
  }
}

/** Sum of a labelled counter over its shard labels. */
export async function counterTotal(counter: {
  get(): Promise<{ values: { value: number }[] }>;
}): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}
