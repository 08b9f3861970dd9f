/**
 * Shared fixtures of the snapshot tests: databases with capture installed, a
 * tiny tmpfs for full-disk tests, readers of what a database and the streams
 * hold, and `-save-snapshot` as a child process.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { ORIGIN_SEQS, POSITIONS, quoteIdent as q } from '../../src/cdc/names.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import type { Config } from '../../src/config/config.ts';
import { shardNumbers, streamName } from '../../src/nats/naming.ts';
import { listSnapshots } from '../../src/snapshot/snapshot-catalog.ts';
import { manifestPosition, type SnapshotManifest } from '../../src/snapshot/snapshot-manifest.ts';
import { readPositions } from '../../src/snapshot/snapshot-restorer.ts';
import { LocalSnapshotStore } from '../../src/snapshot/stores/local-store.ts';
import { spawnCli } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';

/** Fresh directories `<name>-<n>` under one temporary root, removed after the test file. */
export function caseDirs(prefix: string): (name: string) => string {
  const root = tempDir(prefix);
  after(() => root.remove());
  let n = 0;
  return (name) => {
    const dir = join(root.path, `${name}-${++n}`);
    mkdirSync(dir);
    return dir;
  };
}

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
export function useSmallStreams(c: Config): void {
  c.replication_log.shards = 2;
  c.replication_log.max_entries = 50;
  c.replication_log.max_batch_changes = 1;
  c.snapshot.keep = 3;
}

/** `useSmallStreams` with snapshots in the local directory `storeDir`, then `more`. */
export function smallStreams(storeDir: string, more?: (c: Config) => void): (c: Config) => void {
  return (c) => {
    useSmallStreams(c);
    c.snapshot.store = 'local';
    c.snapshot.local.path = storeDir;
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

/**
 * Waits until every shard stream discarded its first messages (so a new node
 * must restore a snapshot) and the node on `dbPath` applied every message the
 * streams still hold (so a snapshot of it reaches them).
 */
export async function waitForDiscardedHistory(
  url: string,
  config: Config,
  dbPath: string,
): Promise<StreamRangeSeen[]> {
  let seen: unknown;
  return waitFor(
    'streams that discarded their first messages, all of the rest applied by the node',
    async () => {
      const ranges = await streamRanges(url, config);
      const positions = appliedPositions(dbPath);
      seen = { ranges, positions: Object.fromEntries(positions) };
      return ranges.every((r) => r.firstSeq > 1 && positions.get(r.shard) === r.lastSeq) ? ranges : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 200, seen: () => seen },
  );
}

/** The stream position per shard stored in the database (what the node applied). */
export function appliedPositions(dbPath: string): Map<number, number> {
  const db = new Database(dbPath, { readonly: true });
  try {
    return readPositions(db);
  } finally {
    db.close();
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

/** Adds at least `bytes` of incompressible rows (ids from `firstId` up) in one transaction. */
export function writeRandomBytes(dbPath: string, bytes: number, firstId = 1_000_000): void {
  const rowBytes = 4000;
  const db = new Database(dbPath);
  try {
    db.pragma('busy_timeout = 5000');
    db.prepare(
      'WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i + 1 < ?) ' +
        "INSERT INTO items (id, name, blob) SELECT ? + i, 'random', randomblob(?) FROM c",
    ).run(Math.ceil(bytes / rowBytes), firstId, rowBytes);
  } finally {
    db.close();
  }
}

export interface SaveSnapshotRun {
  /** null when killed by a signal. */
  readonly exitCode: number | null;
  readonly output: readonly string[];
  /** From the "Snapshot saved to …" line, when there is one. */
  readonly saved?: { readonly store: string; readonly dataObject: string; readonly manifestObject: string };
}

/** Runs `harmonylite -config <configPath> -save-snapshot` to its end. */
export async function runSaveSnapshotCli(configPath: string): Promise<SaveSnapshotRun> {
  const cli = spawnCli(['-config', configPath, '-save-snapshot']);
  const exitCode = await cli.exited;
  const match = cli.output
    .map((l) => /^Snapshot saved to (.+): (\S+) \(\d+ bytes, manifest (\S+)\)$/.exec(l))
    .find((m) => m !== null);
  return {
    exitCode,
    output: cli.output,
    ...(match ? { saved: { store: match[1]!, dataObject: match[2]!, manifestObject: match[3]! } } : {}),
  };
}

/** Sum of a labelled counter over its shard labels. */
export async function counterTotal(counter: {
  get(): Promise<{ values: { value: number }[] }>;
}): Promise<number> {
  return (await counter.get()).values.reduce((sum, v) => sum + v.value, 0);
}

/** The restorable snapshots in a local store directory, newest first. */
export async function storedSnapshots(storeDir: string): Promise<SnapshotManifest[]> {
  const store = new LocalSnapshotStore({ path: storeDir });
  await store.open();
  try {
    return await listSnapshots(store);
  } finally {
    await store.close();
  }
}

/** Waits until every stream discarded history and the newest snapshot reaches every stream's first message. */
export async function waitForRolloverAndSnapshot(
  url: string,
  config: Config,
  storeDir: string,
): Promise<SnapshotManifest> {
  let seen: unknown;
  return waitFor(
    'streams that discarded history and a snapshot that reaches their first messages',
    async () => {
      const ranges = await streamRanges(url, config);
      const newest = (await storedSnapshots(storeDir))[0];
      seen = { ranges, newest: newest?.positions };
      if (ranges.some((r) => r.firstSeq <= 1) || newest === undefined) return undefined;
      return ranges.every((r) => manifestPosition(newest, r.shard) + 1 >= r.firstSeq) ? newest : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 200, seen: () => seen },
  );
}
