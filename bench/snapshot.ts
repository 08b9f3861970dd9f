/**
 * Snapshot save and restore: MB/s of a full save (VACUUM INTO, strip,
 * checksum, zstd, optional encryption, upload) and a full restore (download,
 * decompress, checksum, quick_check, prepare, backup-API swap into a live WAL
 * database, checkpoint) of one database, per store backend against its real
 * server (local directory, NATS object store, s3rver, `rclone serve webdav`,
 * OpenSSH sshd), next to the baselines of the same run: `cp`, a bare
 * `VACUUM INTO`, the zstd CLI, our encode pass at zstd levels 1 and 3 with 0
 * and 2 threads, `integrity_check` against `quick_check`. Medians of `runs`;
 * peak RSS of this process (worker threads included; servers are separate
 * processes). Target: save and restore at least 0.8x the rate of the bare
 * `VACUUM INTO` (local store); peak RSS independent of the database size.
 *
 * The database is built fast with a recursive CTE of random 4000-byte blobs
 * (incompressible: the worst case for zstd, the best for nothing), in WAL
 * mode with capture installed, as a node leaves it.
 *
 * `bench/run.ts` runs it in full mode; alone:
 *   npx tsx bench/snapshot.ts [--size-mb 450] [--backends local,nats,s3,webdav,sftp] [--compress true|false] [--runs 3]
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { copyFile, mkdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import type { JetStreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { installCapture } from '../src/cdc/capture-installer.ts';
import { TableFilter } from '../src/cdc/table-filter.ts';
import { defaultConfig } from '../src/config/config.ts';
import { silentLogger } from '../src/logger.ts';
import { EmbeddedNatsServer } from '../src/nats/embedded-server.ts';
import { WriterQueue } from '../src/sqlite/writer-queue.ts';
import { saveSnapshot } from '../src/snapshot/save-snapshot.ts';
import { encodeFile } from '../src/snapshot/snapshot-file-codec.ts';
import type { SnapshotManifest } from '../src/snapshot/snapshot-manifest.ts';
import { SnapshotRestorer } from '../src/snapshot/snapshot-restorer.ts';
import type { SnapshotStore } from '../src/snapshot/snapshot-store.ts';
import { LocalSnapshotStore } from '../src/snapshot/stores/local-store.ts';
import { NatsObjectSnapshotStore } from '../src/snapshot/stores/nats-object-store.ts';
import { S3SnapshotStore } from '../src/snapshot/stores/s3-store.ts';
import { SftpSnapshotStore } from '../src/snapshot/stores/sftp-store.ts';
import { WebDavSnapshotStore } from '../src/snapshot/stores/webdav-store.ts';
import {
  generateSshKeyPair,
  startS3Server,
  startSshdServer,
  startWebDavServer,
} from '../test/helpers/protocol-servers.ts';

const MB = 1024 * 1024;
const BLOB_BYTES = 4000;

export const SNAPSHOT_BACKENDS = ['local', 'nats', 's3', 'webdav', 'sftp'] as const;
export type SnapshotBackendName = (typeof SNAPSHOT_BACKENDS)[number];

export interface SnapshotBenchOptions {
  readonly sizeMb: number;
  readonly runs: number;
  readonly backends: readonly SnapshotBackendName[];
  readonly compress?: boolean;
  /** Progress lines (stderr by default). */
  readonly log?: (line: string) => void;
}

export interface Measured {
  readonly seconds: number;
  readonly peakRssMb: number;
}

export interface SnapshotBenchRow {
  readonly what: string;
  /** Database MB per second (the database's size over the median time). */
  readonly mbPerSecond: number;
  readonly seconds: number;
  readonly peakRssMb: number;
}

export interface SnapshotBenchResult {
  readonly dbMb: number;
  readonly storedMb: number;
  readonly baselineRssMb: number;
  readonly rows: SnapshotBenchRow[];
  /** Save and restore rate over the bare VACUUM INTO rate, per backend. */
  readonly ratios: { backend: string; save: number; restore: number }[];
}

interface Backend {
  readonly store: SnapshotStore;
  readonly server: string;
  stop(): Promise<void>;
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

function rowsFor(sizeMb: number): number {
  return Math.ceil((sizeMb * MB) / (BLOB_BYTES + 40));
}

function buildDatabase(path: string, sizeMb: number): void {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = OFF');
  db.exec('CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)');
  installCapture(db, new TableFilter([], []), { captureWrites: false }); // internal tables, positions; no triggers to slow the fill
  db.exec(
    `WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < ${rowsFor(sizeMb)}) ` +
      `INSERT INTO blobs (id, data) SELECT i, randomblob(${BLOB_BYTES}) FROM c`,
  );
  installCapture(db, new TableFilter([], []), { captureWrites: true });
  db.exec('INSERT INTO __harmonylite___positions (shard, stream_seq, updated_at) VALUES (1, 1000, 0)');
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
}

/** A fresh store of `name` against its real server on loopback. */
async function startBackend(name: SnapshotBackendName, dir: string): Promise<Backend> {
  switch (name) {
    case 'local':
      return {
        store: new LocalSnapshotStore({ path: join(dir, 'local-store') }),
        server: 'local directory (same disk)',
        stop: async () => undefined,
      };
    case 'nats': {
      const server = new EmbeddedNatsServer({
        storeDir: join(dir, 'nats'),
        serverName: 'bench-snapshot',
        logger: silentLogger(),
      });
      await server.open();
      const nc = await connect({ servers: server.clientUrl });
      return {
        store: new NatsObjectSnapshotStore({ nc, bucket: 'bench-snapshots', replicas: 1 }),
        server: 'nats-server object store (child process)',
        stop: async () => {
          await nc.close();
          await server.close();
        },
      };
    }
    case 's3': {
      const s3 = await startS3Server();
      return {
        store: new S3SnapshotStore({
          endpoint: s3.endpoint,
          bucket: 'bench',
          path: 'snapshots',
          accessKey: s3.accessKey,
          secret: s3.secret,
          forcePathStyle: true,
        }),
        server: 's3rver (npm, child process)',
        stop: () => s3.stop(),
      };
    }
    case 'webdav': {
      const dav = await startWebDavServer({ user: 'bench', pass: 'bench-password' });
      return {
        store: new WebDavSnapshotStore({
          url: `${dav.url}/?dir=/snapshots&login=bench&secret=bench-password`,
        }),
        server: 'rclone serve webdav',
        stop: () => dav.stop(),
      };
    }
    case 'sftp': {
      const keys = join(dir, 'keys');
      await mkdir(keys, { recursive: true });
      const key = generateSshKeyPair(keys, 'client');
      const authorizedKeysPath = join(keys, 'authorized_keys');
      writeFileSync(authorizedKeysPath, `${key.publicKey}\n`);
      const sshd = await startSshdServer({ authorizedKeysPath });
      return {
        store: new SftpSnapshotStore({
          url: `${sshd.url}/snapshots`,
          privateKeyPath: key.privateKeyPath,
          hostFingerprint: sshd.hostKeyFingerprint,
        }),
        server: 'OpenSSH sshd internal-sftp',
        stop: () => sshd.stop(),
      };
    }
  }
}

/** Runs the snapshot benchmark; see the file comment. */
export async function snapshotBench(options: SnapshotBenchOptions): Promise<SnapshotBenchResult> {
  const { sizeMb, runs } = options;
  const compress = options.compress ?? true;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const dir = join(tmpdir(), `hl-bench-snapshot-${process.pid}`);
  await mkdir(dir, { recursive: true });
  try {
    const dbPath = join(dir, 'source.db');
    const t0 = performance.now();
    buildDatabase(dbPath, sizeMb);
    const dbMb = (await stat(dbPath)).size / MB;
    log(`  database: ${dbMb.toFixed(0)} MB built in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    const config = defaultConfig();
    config.db_path = dbPath;
    config.node_id = 1;
    config.snapshot.compress = compress;
    const baselineRssMb = process.memoryUsage.rss() / MB;
    const copyPath = join(dir, 'copy.db');
    // The restore target: a live WAL database of the same shape with capture installed.
    const livePath = join(dir, 'live.db');
    const liveConfig = { ...config, db_path: livePath };
    const rounds = new Map<string, Measured[]>();
    const record = (what: string, m: Measured) => {
      const list = rounds.get(what) ?? [];
      list.push(m);
      rounds.set(what, list);
    };
    let storedMb = 0;

    const saveAndRestore = async (name: string, store: SnapshotStore): Promise<void> => {
      const save = await measured(() => saveSnapshot({ config, nodeId: 1, store, logger: silentLogger() }));
      record(`save, ${name}`, save);
      const manifest: SnapshotManifest = save.result.manifest;
      storedMb = manifest.dataBytes / MB;
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
      record(
        `restore, ${name}`,
        await measured(() => restorer.restore({ behind: [], candidates: [manifest] })),
      );
      const check = new Database(livePath, { readonly: true });
      const restoredRows = check.prepare('SELECT count(*) FROM blobs').pluck().get() as number;
      check.close();
      if (restoredRows !== rowsFor(sizeMb)) throw new Error(`${name}: restored ${restoredRows} rows`);
      for (const o of await store.list()) await store.delete(o.name);
    };

    const baselines = async (): Promise<void> => {
      record('cp (fs.copyFile)', await measured(() => copyFile(dbPath, copyPath)));
      await rm(copyPath);
      record(
        'VACUUM INTO (bare)',
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
            `encode: xxh64+zstd -${level}, ${workers} threads`,
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
    };

    // Backends one after the other, each with its baselines beside it, so a
    // slow phase of this shared machine weighs on both sides of a ratio.
    const backends: { name: string; backend: Backend }[] = [];
    try {
      for (const name of options.backends) {
        const backend = await startBackend(name, dir);
        await backend.store.open();
        backends.push({ name, backend });
      }
      for (let round = 1; round <= runs; round++) {
        for (const { name, backend } of backends) {
          log(`  round ${round}/${runs}: ${name}`);
          await saveAndRestore(name, backend.store);
        }
        log(`  round ${round}/${runs}: baselines`);
        await baselines();
      }
    } finally {
      for (const { backend } of backends) {
        await backend.store.close();
        await backend.stop();
      }
    }

    // Peak RSS of the first round: RSS only ever grows, so later rounds cannot show their own.
    const rows: SnapshotBenchRow[] = [...rounds].map(([what, ms]) => {
      const sorted = [...ms].sort((a, b) => a.seconds - b.seconds);
      const seconds = sorted[Math.floor(sorted.length / 2)]!.seconds;
      return { what, seconds, mbPerSecond: dbMb / seconds, peakRssMb: ms[0]!.peakRssMb };
    });
    const secondsOf = (what: string) => rows.find((r) => r.what === what)!.seconds;
    const vacuum = secondsOf('VACUUM INTO (bare)');
    const ratios = options.backends.map((backend) => ({
      backend,
      save: vacuum / secondsOf(`save, ${backend}`),
      restore: vacuum / secondsOf(`restore, ${backend}`),
    }));
    return { dbMb, storedMb, baselineRssMb, rows, ratios };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The result as a Markdown table and the closing ratios. */
export function snapshotBenchLines(r: SnapshotBenchResult, runs: number): string[] {
  return [
    `snapshot: ${r.dbMb.toFixed(0)} MB database (random blobs), stored ${r.storedMb.toFixed(0)} MB, compress on, medians of ${runs}; peak RSS of the first round (this process; ${r.baselineRssMb.toFixed(0)} MB before)`,
    '',
    '| snapshot step | MB/s | s | / bare VACUUM INTO | peak RSS MB |',
    '|---|---|---|---|---|',
    ...r.rows.map((row) => {
      const vacuum = r.rows.find((x) => x.what === 'VACUUM INTO (bare)')!;
      return `| ${row.what} | ${row.mbPerSecond.toFixed(0)} | ${row.seconds.toFixed(2)} | ${(row.mbPerSecond / vacuum.mbPerSecond).toFixed(2)} | ${row.peakRssMb.toFixed(0)} |`;
    }),
    '',
    `save / VACUUM INTO: ${r.ratios.map((x) => `${x.backend} ${x.save.toFixed(2)}`).join(', ')}; ` +
      `restore / VACUUM INTO: ${r.ratios.map((x) => `${x.backend} ${x.restore.toFixed(2)}`).join(', ')} (target >= 0.8 on local)`,
  ];
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const { values } = parseArgs({
    options: {
      'size-mb': { type: 'string', default: '450' },
      backends: { type: 'string', default: 'local' },
      compress: { type: 'string', default: 'true' },
      runs: { type: 'string', default: '3' },
    },
  });
  const runs = Number(values.runs);
  const backends = values.backends.split(',').map((b) => {
    if (!(SNAPSHOT_BACKENDS as readonly string[]).includes(b)) throw new Error(`unknown backend ${b}`);
    return b as SnapshotBackendName;
  });
  const result = await snapshotBench({
    sizeMb: Number(values['size-mb']),
    runs,
    backends,
    compress: values.compress !== 'false',
  });
  process.stdout.write(snapshotBenchLines(result, runs).join('\n') + '\n');
}
