/**
 * Snapshot store backends: upload (`putFile`) and download
 * (`getFile`) MB/s of one file per backend, each against a real server of its
 * protocol on loopback (the servers started by the tests: s3rver, rclone
 * WebDAV, rclone SFTP, OpenSSH sshd), next to a plain local file copy of the
 * same file in the same run as the baseline. Median of `--runs` runs; the peak
 * RSS of this process during the transfers shows memory does not grow with
 * the file (servers are separate processes, not counted).
 * Everything shares this machine's cores, so a backend's figure includes its
 * server's CPU: it is a client-plus-server number, not a network one.
 *
 * Run: npx tsx bench/snapshot-stores.ts [--size-mb 200] [--runs 3] [--only local,s3,webdav,sftp-rclone,sftp-sshd]
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, writeFileSync } from 'node:fs';
import { copyFile, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { SnapshotStore } from '../src/snapshot/snapshot-store.ts';
import { LocalSnapshotStore } from '../src/snapshot/stores/local-store.ts';
import { S3SnapshotStore } from '../src/snapshot/stores/s3-store.ts';
import { SftpSnapshotStore } from '../src/snapshot/stores/sftp-store.ts';
import { WebDavSnapshotStore } from '../src/snapshot/stores/webdav-store.ts';
import {
  generateSshKeyPair,
  startS3Server,
  startSftpServer,
  startSshdServer,
  startWebDavServer,
  type RunningServer,
} from '../test/helpers/protocol-servers.ts';
import { tempDir } from '../test/helpers/temp-dir.ts';

const { values } = parseArgs({
  options: {
    'size-mb': { type: 'string', default: '200' },
    runs: { type: 'string', default: '3' },
    only: { type: 'string' },
  },
});
const sizeMb = Number(values['size-mb']);
const runs = Number(values.runs);
const only = values.only?.split(',');
const MB = 1024 * 1024;

interface Row {
  readonly name: string;
  readonly server: string;
  readonly uploadMbs: number[];
  readonly downloadMbs: number[];
  peakRssMb: number;
}

/** A backend under test: a fresh store, and what to stop afterwards. */
interface Backend {
  readonly name: string;
  readonly server: string;
  readonly start: () => Promise<{ store: SnapshotStore; servers: RunningServer[] }>;
}

const work = tempDir('hl-bench-stores-');
const keysDir = join(work.path, 'keys');
const source = join(work.path, 'source.bin');
const USER = 'bench';
const PASS = 'bench-password';

const backends: Backend[] = [
  {
    name: 'local',
    server: 'local directory (same disk)',
    start: async () => ({
      store: new LocalSnapshotStore({ path: join(work.path, 'local-store') }),
      servers: [],
    }),
  },
  {
    name: 's3',
    server: 's3rver 3.7 (npm, child process)',
    start: async () => {
      const s3 = await startS3Server();
      const store = new S3SnapshotStore({
        endpoint: s3.endpoint,
        bucket: 'bench',
        path: 'snapshots',
        accessKey: s3.accessKey,
        secret: s3.secret,
        forcePathStyle: true,
      });
      return { store, servers: [s3] };
    },
  },
  {
    name: 'webdav',
    server: 'rclone 1.60 serve webdav',
    start: async () => {
      const dav = await startWebDavServer({ user: USER, pass: PASS });
      return {
        store: new WebDavSnapshotStore({ url: `${dav.url}/?dir=/snapshots&login=${USER}&secret=${PASS}` }),
        servers: [dav],
      };
    },
  },
  {
    name: 'sftp-rclone',
    server: 'rclone 1.60 serve sftp (password, VFS write cache)',
    start: async () => {
      const sftp = await startSftpServer({ user: USER, pass: PASS });
      const store = new SftpSnapshotStore({
        url: `${sftp.url}snapshots`,
        knownHostsPath: sftp.knownHostsPath,
      });
      return { store, servers: [sftp] };
    },
  },
  {
    name: 'sftp-sshd',
    server: 'OpenSSH 9.2 sshd internal-sftp (key)',
    start: async () => {
      const key = generateSshKeyPair(keysDir, 'client');
      const authorizedKeysPath = join(keysDir, 'authorized_keys');
      writeFileSync(authorizedKeysPath, `${key.publicKey}\n`);
      const sshd = await startSshdServer({ authorizedKeysPath });
      const store = new SftpSnapshotStore({
        url: `${sshd.url}/snapshots`,
        privateKeyPath: key.privateKeyPath,
        hostFingerprint: sshd.hostKeyFingerprint,
      });
      return { store, servers: [sshd] };
    },
  },
];

async function main(): Promise<void> {
  mkdirSync(keysDir);
  console.log(`writing ${sizeMb} MiB of random bytes…`);
  await writeRandomFile(source, sizeMb * MB);
  const expected = await sha256File(source);
  const rows: Row[] = [];

  // Baseline: the kernel's own copy of the same file, both ways, with fsync like the stores.
  const baseline: Row = {
    name: 'file copy',
    server: 'fs.copyFile + fsync (baseline)',
    uploadMbs: [],
    downloadMbs: [],
    peakRssMb: 0,
  };
  for (let i = 0; i < runs; i++) {
    const copyPath = join(work.path, 'copy.bin');
    const back = join(work.path, 'copy-back.bin');
    baseline.uploadMbs.push(await mbPerSecond(() => copyAndSync(source, copyPath)));
    baseline.downloadMbs.push(await mbPerSecond(() => copyAndSync(copyPath, back)));
    await rm(copyPath);
    await rm(back);
  }
  rows.push(baseline);

  for (const backend of backends) {
    if (only && !only.includes(backend.name)) continue;
    console.log(`${backend.name}: ${runs} × upload + download…`);
    const { store, servers } = await backend.start();
    const row: Row = {
      name: backend.name,
      server: backend.server,
      uploadMbs: [],
      downloadMbs: [],
      peakRssMb: 0,
    };
    try {
      await store.open();
      const peak = trackPeakRss();
      for (let i = 0; i < runs; i++) {
        const out = join(work.path, `${backend.name}-${i}.bin`);
        row.uploadMbs.push(await mbPerSecond(() => store.putFile('snapshot.db', source)));
        row.downloadMbs.push(await mbPerSecond(() => store.getFile('snapshot.db', out)));
        if (i === 0 && (await sha256File(out)) !== expected)
          throw new Error(`${backend.name}: downloaded bytes differ`);
        await rm(out);
      }
      row.peakRssMb = peak.stop();
    } finally {
      await store.close();
      for (const server of servers) await server.stop();
    }
    rows.push(row);
  }

  console.log(`\n${sizeMb} MiB file, median of ${runs} runs, loopback, ${process.version}\n`);
  console.log('| backend | server | upload MB/s | download MB/s | peak RSS MiB |');
  console.log('|---|---|---:|---:|---:|');
  for (const r of rows) {
    const rss = r.peakRssMb === 0 ? '–' : r.peakRssMb.toFixed(0);
    console.log(
      `| ${r.name} | ${r.server} | ${median(r.uploadMbs).toFixed(0)} | ${median(r.downloadMbs).toFixed(0)} | ${rss} |`,
    );
  }
  console.log('\nMB/s = MiB/s of the file; RSS is this (client) process only.');
}

async function mbPerSecond(fn: () => Promise<void>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return sizeMb / ((performance.now() - t0) / 1000);
}

async function copyAndSync(from: string, to: string): Promise<void> {
  await copyFile(from, to);
  const handle = await open(to, 'r+');
  await handle.sync();
  await handle.close();
}

/** Samples the RSS every 20 ms until `stop()`, which returns the peak in MiB. */
function trackPeakRss(): { stop(): number } {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 20);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage.rss()) / MB;
    },
  };
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

async function writeRandomFile(path: string, bytes: number): Promise<void> {
  const handle = await open(path, 'w');
  try {
    for (let left = bytes; left > 0; left -= MB) await handle.write(randomBytes(Math.min(MB, left)));
  } finally {
    await handle.close();
  }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

try {
  await main();
} finally {
  work.remove();
}
