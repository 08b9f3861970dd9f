/**
 * The machine's own limits, measured in the same run as the product so every
 * figure can be given as a ratio: plain SQLite insert and upsert rates, the cost
 * of a captured insert, and the raw JetStream publish rate.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { installCapture } from '../src/cdc/capture-installer.ts';
import { TableFilter } from '../src/cdc/table-filter.ts';
import { silentLogger } from '../src/logger.ts';
import { EmbeddedNatsServer } from '../src/nats/embedded-server.ts';
import { median } from './workloads.ts';

function withDb<T>(fn: (db: Database.Database) => T): T {
  const dir = mkdtempSync(join(tmpdir(), 'hl-limits-'));
  const db = new Database(join(dir, 'limits.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.exec(
      'CREATE TABLE items (id INTEGER PRIMARY KEY, writer INTEGER NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL)',
    );
    return fn(db);
  } finally {
    db.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function insertRate(db: Database.Database, rows: number, rowsPerTxn: number, body: string): number {
  const insert = db.prepare('INSERT INTO items (writer, seq, payload) VALUES (?, ?, ?)');
  const tx = db.transaction((from: number, to: number) => {
    for (let i = from; i < to; i++) insert.run(1, i, body);
  });
  const t0 = performance.now();
  for (let from = 0; from < rows; from += rowsPerTxn) tx(from, Math.min(rows, from + rowsPerTxn));
  return rows / ((performance.now() - t0) / 1000);
}

/** Rows/s of plain inserts and of the same inserts with HarmonyLite's capture installed (medians of `runs`). */
export function captureOverhead(options: {
  rows: number;
  rowsPerTxn: number;
  rowBytes: number;
  runs: number;
}): {
  plain: number;
  captured: number;
} {
  const body = 'x'.repeat(options.rowBytes);
  const plain: number[] = [];
  const captured: number[] = [];
  for (let r = 0; r < options.runs; r++) {
    plain.push(withDb((db) => insertRate(db, options.rows, options.rowsPerTxn, body)));
    captured.push(
      withDb((db) => {
        installCapture(db, new TableFilter([], []), { captureWrites: true });
        return insertRate(db, options.rows, options.rowsPerTxn, body);
      }),
    );
  }
  return { plain: median(plain), captured: median(captured) };
}

/** Plain upserts, 1000 per transaction: what applying costs without HarmonyLite. */
export function plainApplyRate(options: { rows: number; rowBytes: number }): number {
  const body = 'x'.repeat(options.rowBytes);
  return withDb((db) => {
    const upsert = db.prepare(
      'INSERT INTO items (id, writer, seq, payload) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET writer = excluded.writer, seq = excluded.seq, payload = excluded.payload',
    );
    const tx = db.transaction((from: number, to: number) => {
      for (let i = from; i < to; i++) upsert.run(BigInt(i + 1), 2n, BigInt(i), body);
    });
    const t0 = performance.now();
    for (let from = 0; from < options.rows; from += 1000) tx(from, Math.min(options.rows, from + 1000));
    return options.rows / ((performance.now() - t0) / 1000);
  });
}

/** Raw JetStream publish rate of `messages` of `bytes` each, `inFlight` unacknowledged at a time, on an R1 stream. */
export async function rawPublishRate(options: {
  messages: number;
  bytes: number;
  inFlight: number;
}): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'hl-limits-nats-'));
  const server = new EmbeddedNatsServer({ storeDir: dir, serverName: 'limits', logger: silentLogger() });
  await server.open();
  const nc = await connect({ servers: server.clientUrl });
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.add({ name: 'limits', subjects: ['limits'] });
    const js = jetstream(nc);
    const data = new Uint8Array(options.bytes);
    const t0 = performance.now();
    let sent = 0;
    const worker = async () => {
      while (sent < options.messages) {
        sent++;
        await js.publish('limits', data);
      }
    };
    await Promise.all(Array.from({ length: options.inFlight }, worker));
    return options.messages / ((performance.now() - t0) / 1000);
  } finally {
    await nc.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
