/**
 * Snapshot save and restore (issue 4): MB/s of a full save (copy, strip,
 * checksum, optional zstd, upload) and a full restore (download, decompress,
 * checksum, integrity_check, prepare, backup-API swap into a live WAL
 * database, checkpoint) of one database, next to a plain file copy of the same
 * database in the same run, with the peak RSS of this process (worker threads
 * included) during each phase. Target: save and restore at least half the
 * speed of the file copy; peak RSS independent of the database size.
 *
 * The database is built fast with a recursive CTE of random 4000-byte blobs
 * (incompressible: the worst case for zstd, the best for nothing), in WAL
 * mode with capture installed, as a node leaves it.
 *
 * Run: npx tsx bench/snapshot.ts [--size-mb 1024] [--store local|nats] [--compress true|false]
 */
import { copyFile, mkdir, open, rm, stat } from 'node:fs/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import type { JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { installCapture } from '../src/cdc/capture-installer.ts';
import { TableFilter } from '../src/cdc/table-filter.ts';
import { defaultConfig } from '../src/config/config.ts';
import { silentLogger } from '../src/logger.ts';
import { EmbeddedNatsServer } from '../src/nats/embedded-server.ts';
import { WriterQueue } from '../src/replication/writer-queue.ts';
import { createSnapshotStore } from '../src/snapshot/create-snapshot-store.ts';
import { saveSnapshot } from '../src/snapshot/save-snapshot.ts';
import { SnapshotRestorer } from '../src/snapshot/snapshot-restorer.ts';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    store: { type: 'string', default: 'local' },
    compress: { type: 'string', default: 'true' },
  },
});
const sizeMb = Number(values['size-mb']);
const storeKind = values.store === 'nats' ? 'nats' : 'local';
const compress = values.compress !== 'false';
const MB = 1024 * 1024;
const BLOB_BYTES = 4000;

/** Peak RSS while `fn` runs, sampled every 20 ms. */
async function measured<T>(fn: () => Promise<T>): Promise<{ result: T; seconds: number; peakRssMb: number }> {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  const t0 = performance.now();
  try {
    const result = await fn();
    return {
      result,
      seconds: (performance.now() - t0) / 1000,
      peakRssMb: Math.max(peak, process.memoryUsage.rss()) / MB,
    };
  } finally {
    clearInterval(timer);
  }
}

function buildDatabase(path: string): void {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = OFF');
  db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)');
  installCapture(db, new TableFilter([], []), { captureWrites: false }); // internal tables, positions; no triggers to slow the fill
  const rows = Math.ceil((sizeMb * MB) / (BLOB_BYTES + 40));
  db.exec(
    `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${rows}) ` +
      `INSERT INTO blobs (id, data) SELECT i, randomblob(${BLOB_BYTES}) FROM c`,
  );
  installCapture(db, new TableFilter([], []), { captureWrites: true });
  db.exec('INSERT INTO __harmonylite___positions (shard, stream_seq, updated_at) VALUES (1, 1000, 0)');
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

async function main(): Promise<void> {
  const dir = join(tmpdir(), `hl-bench-snapshot-${process.pid}`);
  await mkdir(dir, { recursive: true });
  let server: EmbeddedNatsServer | undefined;
  let nc: NatsConnection | undefined;
  try {
    const dbPath = join(dir, 'source.db');
    const t0 = performance.now();
    buildDatabase(dbPath);
    const dbBytes = (await stat(dbPath)).size;
    const dbMb = dbBytes / MB;
    console.log(`database: ${dbMb.toFixed(0)} MB built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const config = defaultConfig();
    config.db_path = dbPath;
    config.node_id = 1;
    config.snapshot.compress = compress;
    config.snapshot.store = storeKind;
    config.snapshot.local.path = join(dir, 'store');
    if (storeKind === 'nats') {
      server = new EmbeddedNatsServer({
        storeDir: join(dir, 'nats'),
        serverName: 'bench-snapshot',
        logger: silentLogger(),
      });
      await server.open();
      nc = await connect({ servers: server.clientUrl });
    }
    const store = createSnapshotStore(config, { nc });
    await store.open();

    const baseline = process.memoryUsage.rss() / MB;
    const copy = await measured(() => copyFile(dbPath, join(dir, 'copy.db')));
    await rm(join(dir, 'copy.db'));
    const streamed = await measured(() =>
      pipeline(createReadStream(dbPath, { highWaterMark: MB }), createWriteStream(join(dir, 'copy.db'))),
    );
    await rm(join(dir, 'copy.db'));
    // What a durable copy costs: snapshots flush what they store (the store's fsync, SQLite's commits).
    const durable = await measured(async () => {
      await copyFile(dbPath, join(dir, 'copy.db'));
      const handle = await open(join(dir, 'copy.db'), 'r+');
      await handle.sync();
      await handle.close();
    });
    await rm(join(dir, 'copy.db'));

    const save = await measured(() => saveSnapshot({ config, nodeId: 1, store, logger: silentLogger() }));
    const manifest = save.result.manifest;

    // The restore target: a live WAL database of the same shape with capture installed.
    const livePath = join(dir, 'live.db');
    const live = new Database(livePath);
    live.pragma('journal_mode = WAL');
    live.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)');
    installCapture(live, new TableFilter([], []), { captureWrites: true });
    live.close();
    const liveConfig = { ...config, db_path: livePath };
    const restorer = new SnapshotRestorer({
      config: liveConfig,
      nodeId: 2,
      store: async () => store,
      jsm: undefined as unknown as JetStreamManager, // restore() does not read streams
      writer: new WriterQueue(),
      logger: silentLogger(),
    });
    const restore = await measured(() => restorer.restore({ behind: [], candidates: [manifest] }));
    const check = new Database(livePath, { readonly: true });
    const restoredRows = check.prepare('SELECT count(*) FROM blobs').pluck().get() as number;
    check.close();
    await store.close();

    const row = (what: string, m: { seconds: number; peakRssMb: number }) =>
      `${what.padEnd(34)} ${(dbMb / m.seconds).toFixed(0).padStart(6)} MB/s ${m.seconds.toFixed(2).padStart(7)} s   peak RSS ${m.peakRssMb.toFixed(0).padStart(5)} MB (+${(m.peakRssMb - baseline).toFixed(0)})`;
    console.log(
      `store: ${store.description}; compress: ${compress}; stored ${(manifest.dataBytes / MB).toFixed(0)} MB`,
    );
    console.log(`baseline RSS ${baseline.toFixed(0)} MB`);
    console.log(row('plain copy (fs.copyFile)', copy));
    console.log(row('plain copy (stream, 1 MiB chunks)', streamed));
    console.log(row('plain copy + fsync', durable));
    console.log(row('snapshot save (total)', save));
    console.log(row('snapshot restore (total)', restore));
    console.log(
      `save / copyFile: ${(copy.seconds / save.seconds).toFixed(2)}   restore / copyFile: ${(copy.seconds / restore.seconds).toFixed(2)}   (target >= 0.5)`,
    );
    console.log(
      `save / copy+fsync: ${(durable.seconds / save.seconds).toFixed(2)}   restore / copy+fsync: ${(durable.seconds / restore.seconds).toFixed(2)}`,
    );
    if (restoredRows !== Math.ceil((sizeMb * MB) / (BLOB_BYTES + 40)))
      throw new Error(`restored ${restoredRows} rows`);
  } finally {
    await nc?.close();
    await server?.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
