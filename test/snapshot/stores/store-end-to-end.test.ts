/**
 * End to end, per backend (S3, WebDAV, SFTP), each on a real server on
 * loopback: a node whose TOML config points `[snapshot]` at the backend saves a
 * snapshot there with `-save-snapshot`; a new node with an empty database,
 * whose streams no longer hold the history, restores it, holds exactly the
 * first node's rows and goes on replicating. And a snapshot larger than the
 * server's disk (a tmpfs) fails with an error naming the backend and the
 * operation, leaving readers nothing new.
 */
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Config } from '../../../src/config/config.ts';
import { createSnapshotStore } from '../../../src/snapshot/create-snapshot-store.ts';
import { listSnapshots } from '../../../src/snapshot/snapshot-catalog.ts';
import { startNatsServer } from '../../helpers/nats-server.ts';
import {
  createDatabase,
  nodeConfig,
  startNode,
  tableContents,
  waitConverged,
  writeConfigFile,
} from '../../helpers/node-harness.ts';
import {
  generateSshKeyPair,
  startS3Server,
  startSshdServer,
  startWebDavServer,
  type ServerStorageOptions,
} from '../../helpers/protocol-servers.ts';
import { waitFor } from '../../helpers/wait-for.ts';
import {
  caseDirs,
  count,
  mountTinyTmpfs,
  runSaveSnapshotCli,
  SCHEMA,
  useSmallStreams,
  waitForDiscardedHistory,
  writeRandomBytes,
  writeRows,
} from '../snapshot-test-kit.ts';

const caseDir = caseDirs('hl-store-e2e-');

/** A backend's server, running. */
interface BackendServer {
  readonly port: number;
  /** The directory the server keeps the objects in. */
  readonly dir: string;
  /** Points a node's `[snapshot]` config at this server. */
  configure(config: Config): void;
  [Symbol.asyncDispose](): Promise<void>;
}

interface Backend {
  readonly name: 's3' | 'webdav' | 'sftp';
  start(storage: ServerStorageOptions): Promise<BackendServer>;
  /** The server's word for a full disk, as the store's error message carries it. */
  readonly fullDisk: RegExp;
  /**
   * Whether the server's listing may show the data object of a PUT that failed.
   * s3rver writes objects in place (S3 itself makes every PUT atomic, which is
   * what the S3 store relies on); manifests still go last, so no snapshot shows.
   */
  readonly listsFailedPuts: boolean;
}

const DAV_USER = 'snapshotter';
const DAV_PASS = 'dav-e2e-Pa55';

const BACKENDS: readonly Backend[] = [
  {
    name: 's3',
    start: async (storage) => {
      const server = await startS3Server(storage);
      return {
        port: server.port,
        dir: server.dir,
        configure: (c) => {
          c.snapshot.store = 's3';
          c.snapshot.s3.endpoint = `127.0.0.1:${server.port}`;
          c.snapshot.s3.use_ssl = false;
          c.snapshot.s3.bucket = 'snapshots';
          c.snapshot.s3.path = 'cluster/snapshots';
          c.snapshot.s3.access_key = server.accessKey;
          c.snapshot.s3.secret = server.secret;
          c.snapshot.s3.force_path_style = true;
        },
        [Symbol.asyncDispose]: () => server.stop(),
      };
    },
    // s3rver answers a failed write with 500 InternalError; MinIO answers a full
    // disk with XMinioStorageFull (507), which the store reports as no space.
    fullDisk: /InternalError/,
    listsFailedPuts: true,
  },
  {
    name: 'webdav',
    start: async (storage) => {
      const server = await startWebDavServer({ user: DAV_USER, pass: DAV_PASS, ...storage });
      return {
        port: server.port,
        dir: server.dir,
        configure: (c) => {
          c.snapshot.store = 'webdav';
          c.snapshot.webdav.url = `${server.url}/?dir=/cluster/snapshots&login=${DAV_USER}&secret=${DAV_PASS}`;
        },
        [Symbol.asyncDispose]: () => server.stop(),
      };
    },
    // rclone (golang.org/x/net/webdav) answers every failed write with 405 and no
    // detail; servers that answer 507 Insufficient Storage get "no space left".
    fullDisk: /PUT answered HTTP (405|507)/,
    listsFailedPuts: false,
  },
  {
    // OpenSSH's sshd: rclone's sftp server acknowledges writes into its VFS cache,
    // so a full disk behind it never reaches the client.
    name: 'sftp',
    start: async (storage) => {
      const keys = caseDir('ssh-keys');
      const clientKey = generateSshKeyPair(keys, 'client_key');
      const authorizedKeysPath = join(keys, 'authorized_keys');
      writeFileSync(authorizedKeysPath, `${clientKey.publicKey}\n`);
      const server = await startSshdServer({ authorizedKeysPath, ...storage });
      return {
        port: server.port,
        dir: server.dir,
        configure: (c) => {
          c.snapshot.store = 'sftp';
          c.snapshot.sftp.url = `${server.url}/cluster/snapshots`;
          c.snapshot.sftp.known_hosts = server.knownHostsPath;
          c.snapshot.sftp.private_key = clientKey.privateKeyPath;
        },
        [Symbol.asyncDispose]: () => server.stop(),
      };
    },
    fullDisk: /no space left on the server \(\d+ bytes free in \S+; it said "Failure"\)/,
    listsFailedPuts: false,
  },
];

/** The raw object names and the catalog's snapshot names in the store `config` points at. */
async function storeContents(config: Config): Promise<{ objects: string[]; snapshots: string[] }> {
  const store = createSnapshotStore(config);
  await store.open();
  try {
    return {
      objects: (await store.list()).map((o) => o.name),
      snapshots: (await listSnapshots(store)).map((s) => s.name),
    };
  } finally {
    await store.close();
  }
}

for (const backend of BACKENDS) {
  describe(`${backend.name} snapshot store end to end`, () => {
    it('a node saves a snapshot there; a new node restores exactly its rows and replicates', async () => {
      const dir = caseDir(`${backend.name}-restore`);
      await using nats = await startNatsServer();
      await using server = await backend.start({});
      const configure = (c: Config) => {
        useSmallStreams(c);
        server.configure(c);
      };
      // No automatic snapshots on the writer: the only snapshot is the CLI's.
      const writerConfigure = (c: Config) => {
        configure(c);
        c.snapshot.enabled = false;
      };
      const writer = { dir, nodeId: 1, urls: [nats.url], configure: writerConfigure };
      const a = await startNode({ ...writer, schema: SCHEMA });
      try {
        writeRows(a.dbPath, 1, 200, 'a');
        await waitForDiscardedHistory(nats.url, a.config, a.dbPath);
        const configPath = writeConfigFile(nodeConfig(writer), join(dir, 'node-1.toml'));
        const cli = await runSaveSnapshotCli(configPath);
        assert.equal(cli.exitCode, 0, cli.output.join('\n'));
        assert.ok(cli.saved, cli.output.join('\n'));
        assert.match(cli.saved.store, new RegExp(`^${backend.name} .*127\\.0\\.0\\.1:${server.port}`));
        const onServer = readdirSync(server.dir, { recursive: true }).map(String);
        for (const object of [cli.saved.dataObject, cli.saved.manifestObject])
          assert.ok(
            onServer.some((f) => f.includes(object)),
            `${object} in the server's directory: ${onServer.join(', ')}`,
          );

        const b = await startNode({ dir, nodeId: 2, urls: [nats.url], schema: SCHEMA, configure });
        try {
          const restored = b.logs.records.find((r) => r.msg === 'Snapshot restored');
          assert.ok(restored, b.logs.messages().join('\n'));
          assert.equal(`${String(restored.name)}.json`, cli.saved.manifestObject);
          assert.equal(count(b.dbPath, 'SELECT count(*) FROM items'), 200);
          assert.equal(tableContents(b.dbPath, 'items'), tableContents(a.dbPath, 'items'));

          writeRows(b.dbPath, 1001, 1010, 'b');
          await waitFor(
            "the restored node's writes on the first node",
            () => count(a.dbPath, 'SELECT count(*) FROM items WHERE id > 1000') === 10,
          );
          writeRows(a.dbPath, 2001, 2005, 'a-after');
          await waitConverged([a.dbPath, b.dbPath], ['items']);
          assert.equal(count(b.dbPath, 'SELECT count(*) FROM items'), 215);
        } finally {
          await b.close();
        }
      } finally {
        await a.close();
      }
    });

    it('a snapshot larger than the server disk fails naming backend and operation; readers see nothing new', async (t) => {
      if (process.getuid?.() !== 0) return t.skip('mounting the small tmpfs needs root');
      const dir = caseDir(`${backend.name}-full`);
      const disk = join(dir, 'disk');
      const unmount = mountTinyTmpfs(disk, 2 * 1024 * 1024);
      if (unmount === undefined) return t.skip('mount -t tmpfs is not permitted here');
      try {
        await using server = await backend.start({ storageDir: disk });
        const config = nodeConfig({
          dir,
          nodeId: 1,
          urls: [], // -save-snapshot needs NATS only for the NATS object store
          configure: (c) => {
            server.configure(c);
            c.snapshot.compress = false;
          },
        });
        createDatabase(config.db_path, SCHEMA);
        writeRows(config.db_path, 1, 10, 'small');
        const configPath = writeConfigFile(config, join(dir, 'node-1.toml'));
        const first = await runSaveSnapshotCli(configPath);
        assert.equal(first.exitCode, 0, first.output.join('\n'));
        const before = await storeContents(config);
        assert.equal(before.snapshots.length, 1);

        writeRandomBytes(config.db_path, 3 * 1024 * 1024);
        const second = await runSaveSnapshotCli(configPath);
        assert.equal(second.exitCode, 1, second.output.join('\n'));
        const error = second.output.find((l) => l.startsWith('Error: '));
        assert.ok(error, second.output.join('\n'));
        t.diagnostic(error);
        const failed = new RegExp(`^Error: ${backend.name}: put (snapshot-\\d+-1\\.db): `).exec(error);
        assert.ok(failed, error);
        assert.match(error, backend.fullDisk);

        const afterwards = await storeContents(config);
        assert.deepEqual(afterwards.snapshots, before.snapshots, 'no new snapshot for readers');
        const added = afterwards.objects.filter((o) => !before.objects.includes(o));
        if (added.length > 0) t.diagnostic(`listed after the failed upload: ${added.join(', ')}`);
        assert.deepEqual(added, backend.listsFailedPuts ? added.filter((o) => o === failed[1]) : []);
      } finally {
        unmount();
      }
    });
  });
}
