/**
 * Snapshot save and restore: MB/s of a full save (VACUUM INTO, strip,
 * checksum, zstd, optional encryption, upload) and a full restore (download,
 * decompress, checksum, quick_check, prepare, backup-API swap into a live WAL
 * database, checkpoint) of one database, next to the baselines of the same
 * run: `cp`, a bare `VACUUM INTO`, the zstd CLI, our encode pass at zstd
 * levels 1 and 3 with 0 and 2 threads, `integrity_check` against
 * `quick_check`. Medians of `--runs`; peak RSS of this process (worker
 * threads included). Target: save and restore at least 0.8x the rate of the
 * bare `VACUUM INTO`; peak RSS independent of the database size.
 *
 * The database is built fast with a recursive CTE of random 4000-byte blobs
 * (incompressible: the worst case for zstd, the best for nothing), in WAL
 * mode with capture installed, as a node leaves it.
 *
 * Run: npx tsx bench/snapshot.ts [--size-mb 1024] [--store local|nats] [--compress true|false] [--runs 3]
 */
import { spawn } from 'node:child_process';
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import type { JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { installCapture } from '../src/cdc/capture-installer.ts';
import { TableFilter } from '../src/cdc/table-filter.ts';
import { defaultConfig } from '../src/config/config.ts';
import { silentLogger } from '../src/logger.ts';
import { EmbeddedNatsServer } from '../src/nats/embedded-server.ts';
import { WriterQueue } from '../src/sqlite/writer-queue.ts';
import { createSnapshotStore } from '../src/snapshot/create-snapshot-store.ts';
import { saveSnapshot } from '../src/snapshot/save-snapshot.ts';
import { encodeFile } from '../src/snapshot/snapshot-file-codec.ts';
import type { SnapshotManifest } from '../src/snapshot/snapshot-manifest.ts';
import { SnapshotRestorer } from '../src/snapshot/snapshot-restorer.ts';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '1024' },
    store: { type: 'string', default: 'local' },
    compress: { type: 'string', default: 'true' },
    runs: { type: 'string', default: '3' },
  },
});
const sizeMb = Number(values['size-mb']);
const storeKind = values.store === 'nats' ? 'nats' : 'local';
const compress = values.compress !== 'false';
const runs = Number(values.runs);
const MB = 1024 * 1024;
const BLOB_BYTES = 4000;

interface Measured {
  readonly seconds: number;
  readonly peakRssMb: number;
}

function run(cmd: string, args: readonly string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: 'ignore' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}`))));
  });
}

/** Peak RSS while `fn` runs, sampled every 20 ms. */
async function measured<T>(fn: () => Promise<T>): Promise<Measured & { result: T }> {
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
    const copyPath = join(dir, 'copy.db');
    // The restore target: a live WAL database of the same shape with capture installed.
    const livePath = join(dir, 'live.db');
    const liveConfig = { ...config, db_path: livePath };
    const rounds: Record<string, Measured[]> = {};
    const record = (what: string, m: Measured) => (rounds[what] ??= []).push(m);
    let manifest: SnapshotManifest | undefined;
    for (let round = 1; round <= runs; round++) {
      // First in the round: RSS only ever grows, so the first round's save and restore peaks are theirs alone.
      const save = await measured(() => saveSnapshot({ config, nodeId: 1, store, logger: silentLogger() }));
      record('snapshot save (total)', save);
      manifest = save.result.manifest;
      await rm(livePath, { force: true });
      const live = new Database(livePath);
      live.pragma('journal_mode = WAL');
      live.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)');
      installCapture(live, new TableFilter([], []), { captureWrites: true });
      live.close();
      const restorer = new SnapshotRestorer({
        config: liveConfig,
        nodeId: 2,
        store: async () => store,
        jsm: undefined as unknown as JetStreamManager, // restore() does not read streams
        writer: new WriterQueue(),
        logger: silentLogger(),
      });
      const m = manifest;
      record(
        'snapshot restore (total)',
        await measured(() => restorer.restore({ behind: [], candidates: [m] })),
      );
      record('cp (fs.copyFile)', await measured(() => copyFile(dbPath, copyPath)));
      await rm(copyPath);
      record(
        'VACUUM INTO',
        await measured(async () => {
          const db = new Database(dbPath, { readonly: true });
          db.exec(`VACUUM INTO '${copyPath}'`);
          db.close();
        }),
      );
      for (const [label, args] of [
        ['zstd -1 -T2 (CLI)', ['-1', '-T2']],
        ['zstd -3 -T2 (CLI)', ['-3', '-T2']],
      ] as const) {
        const out = join(dir, 'copy.zst');
        record(label, await measured(() => run('zstd', ['-q', '-f', ...args, copyPath, '-o', out])));
        await rm(out);
      }
      for (const level of [1, 3])
        for (const workers of [0, 2]) {
          const out = join(dir, 'copy.zst');
          record(
            `encode: sha256+zstd -${level}, ${workers} threads`,
            await measured(() =>
              encodeFile(copyPath, out, { compressionLevel: level, compressionWorkers: workers }),
            ),
          );
          await rm(out);
        }
      for (const check of ['integrity_check', 'quick_check']) {
        record(
          `PRAGMA ${check}`,
          await measured(async () => {
            const db = new Database(copyPath, { readonly: true });
            db.pragma(check);
            db.close();
          }),
        );
      }
      await rm(copyPath);
    }
    const check = new Database(livePath, { readonly: true });
    const restoredRows = check.prepare('SELECT count(*) FROM blobs').pluck().get() as number;
    check.close();
    await store.close();

    const median = (ms: Measured[]): Measured => {
      const sorted = [...ms].sort((a, b) => a.seconds - b.seconds);
      return {
        ...sorted[Math.floor(sorted.length / 2)]!,
        peakRssMb: ms[0]!.peakRssMb,
      };
    };
    console.log(
      `store: ${store.description}; compress: ${compress}; stored ${(manifest!.dataBytes / MB).toFixed(0)} MB; medians of ${runs}, peak RSS of the first round`,
    );
    console.log(`baseline RSS ${baseline.toFixed(0)} MB`);
    for (const [what, ms] of Object.entries(rounds)) {
      const m = median(ms);
      console.log(
        `${what.padEnd(40)} ${(dbMb / m.seconds).toFixed(0).padStart(6)} MB/s ${m.seconds.toFixed(2).padStart(7)} s   peak RSS ${m.peakRssMb.toFixed(0).padStart(5)} MB (+${(m.peakRssMb - baseline).toFixed(0)})`,
      );
    }
    const seconds = (what: string) => median(rounds[what]!).seconds;
    const vacuum = seconds('VACUUM INTO');
    console.log(
      `save / VACUUM INTO: ${(vacuum / seconds('snapshot save (total)')).toFixed(2)}   ` +
        `restore / VACUUM INTO: ${(vacuum / seconds('snapshot restore (total)')).toFixed(2)}   (target >= 0.8; rates, medians)`,
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
