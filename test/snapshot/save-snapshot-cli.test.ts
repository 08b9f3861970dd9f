/**
 * `harmonylite -config FILE -save-snapshot` as a real child process: the
 * snapshot it stores is what a new node restores; failures print `Error: …`
 * and exit non-zero; `kill -9` mid-upload leaves the previous snapshot
 * restorable and no manifest pointing to partial data.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import Database from 'better-sqlite3';
import { snapshotBucket } from '../../src/nats/naming.ts';
import { listSnapshots } from '../../src/snapshot/snapshot-catalog.ts';
import { runVerifyTask } from '../../src/snapshot/snapshot-tasks.ts';
import { removeStaleTempDirs } from '../../src/snapshot/snapshot-temp-dir.ts';
import { NatsObjectSnapshotStore } from '../../src/snapshot/stores/nats-object-store.ts';
import { startNatsServer } from '../helpers/nats-server.ts';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  startNode,
  waitConverged,
  writeConfigFile,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { SCHEMA, smallStreams, writeRows } from './snapshot-test-kit.ts';

const root = tempDir('hl-save-cli-');
after(() => root.remove());
let n = 0;

function caseDir(name: string): string {
  const dir = join(root.path, `${name}-${++n}`);
  mkdirSync(dir);
  return dir;
}

describe('-save-snapshot', () => {
  it('stores a snapshot, prints where it went, and a new node restores from it', async () => {
    const dir = caseDir('cli');
    const storeDir = join(dir, 'snapshots');
    await using server = await startNatsServer();
    // No automatic snapshots on the writer: the only snapshot is the CLI's.
    const writerConfig = smallStreams(storeDir, (c) => (c.snapshot.enabled = false));
    const a = await startNode({
      dir,
      nodeId: 1,
      urls: [server.url],
      schema: SCHEMA,
      configure: writerConfig,
    });
    try {
      writeRows(a.dbPath, 1, 200, 'a');
      const configPath = writeConfigFile(
        nodeConfig({ dir, nodeId: 1, urls: [server.url], configure: writerConfig }),
        join(dir, 'node-1.toml'),
      );
      const cli = spawnCli(['-config', configPath, '-save-snapshot']);
      assert.equal(await cli.exited, 0, cli.output.join('\n'));
      const line = cli.output.find((l) => l.startsWith('Snapshot saved to '));
      assert.ok(line, cli.output.join('\n'));
      const match =
        /^Snapshot saved to local directory (.+): (snapshot-\d+-1\.db\.zst) \(\d+ bytes, manifest (snapshot-\d+-1\.json)\)$/.exec(
          line,
        );
      assert.ok(match, line);
      assert.equal(match[1], storeDir);
      assert.ok(existsSync(join(storeDir, match[2]!)) && existsSync(join(storeDir, match[3]!)));

      const c = await startNode({
        dir,
        nodeId: 3,
        urls: [server.url],
        schema: SCHEMA,
        configure: smallStreams(storeDir),
      });
      try {
        const restored = c.logs.records.find((r) => r.msg === 'Snapshot restored');
        assert.ok(restored, c.logs.messages().join('\n'));
        assert.equal(`${String(restored.name)}.json`, match[3]);
        await waitConverged([a.dbPath, c.dbPath], ['items']);
      } finally {
        await c.close();
      }
    } finally {
      await a.close();
    }
  });

  it('prints a clear error and exits 1 when the store cannot be reached, 2 for a config error', async () => {
    const dir = caseDir('errors');
    const config = nodeConfig({ dir, nodeId: 1, urls: ['nats://127.0.0.1:1'] });
    config.nats.connect_retries = 0;
    createDatabase(config.db_path, SCHEMA);
    const unreachable = spawnCli(['-config', writeConfigFile(config, join(dir, 'a.toml')), '-save-snapshot']);
    assert.equal(await unreachable.exited, 1);
    assert.ok(
      unreachable.output.some((l) => /^Error: cannot reach NATS/.test(l)),
      unreachable.output.join('\n'),
    );

    config.snapshot.store = 'local';
    config.snapshot.local.path = '';
    const misconfigured = spawnCli([
      '-config',
      writeConfigFile(config, join(dir, 'b.toml')),
      '-save-snapshot',
    ]);
    assert.equal(await misconfigured.exited, 2);
    assert.ok(
      misconfigured.output.some(
        (l) => l === 'Error: config key "snapshot.local.path" is required when snapshot.store = "local"',
      ),
      misconfigured.output.join('\n'),
    );
    assert.ok(misconfigured.output.some((l) => l.startsWith('Try: ')));
  });

  it('kill -9 during the upload leaves the previous snapshot restorable and no partial one', async (t) => {
    const dir = caseDir('kill');
    await using server = await startNatsServer();
    const config = nodeConfig({ dir, nodeId: 1, urls: [server.url] });
    config.snapshot.compress = false;
    createDatabase(config.db_path, SCHEMA);
    writeRows(config.db_path, 1, 100, 'small');
    const configPath = writeConfigFile(config, join(dir, 'node-1.toml'));
    const first = spawnCli(['-config', configPath, '-save-snapshot']);
    assert.equal(await first.exited, 0, first.output.join('\n'));

    // Big enough that the upload takes a while: ~400 MB of random blobs.
    const db = new Database(config.db_path);
    db.exec(
      'WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 100000) ' +
        "INSERT INTO items (id, name, blob) SELECT 1000 + i, 'big', randomblob(4000) FROM c",
    );
    db.close();
    const second = spawnCli(['-config', configPath, '-save-snapshot']);
    await second.waitForOutput(/uploading snapshot/, 60_000);
    await new Promise((r) => setTimeout(r, 200)); // well into the upload (or, at worst, the checksum pass)
    second.kill('SIGKILL');
    assert.equal(await second.exited, null, 'killed, not finished');
    assert.ok(!second.output.some((l) => l.startsWith('Snapshot saved')), 'the upload was still running');

    const nc = await connect({ servers: server.url });
    try {
      const bucket = snapshotBucket(config.nats.stream_prefix, '');
      const store = new NatsObjectSnapshotStore({ nc, bucket });
      await store.open();
      const snapshots = await listSnapshots(store);
      assert.equal(snapshots.length, 1, 'only the first snapshot is listed');
      const objects = (await store.list()).map((o) => o.name);
      assert.deepEqual(
        objects.filter((o) => o.endsWith('.json')),
        [`${snapshots[0]!.name}.json`],
        'no manifest of the killed upload',
      );
      // At most a complete data object without manifest (killed between the two), never restored.
      assert.ok(objects.length <= 3, objects.join(', '));
      // The previous snapshot is complete and verifies.
      const out = join(dir, 'restored.db');
      await store.getFile(snapshots[0]!.dataObject, join(dir, 'download'));
      await runVerifyTask({
        kind: 'verify',
        downloadedPath: join(dir, 'download'),
        outPath: out,
        compressed: false,
        expected: { checksum: snapshots[0]!.checksum, sizeBytes: snapshots[0]!.sizeBytes },
        objectName: snapshots[0]!.dataObject,
      });
      const restored = new Database(out, { readonly: true });
      assert.equal(restored.prepare('SELECT count(*) FROM items').pluck().get(), 100);
      restored.close();
      await store.close();

      // What the killed process left: its temporary directory (removed at the next start) and,
      // in the object store, chunks without metadata (purged once old).
      assert.equal(readdirSync(dir).filter((f) => f.startsWith('.harmonylite-snapshot-')).length, 1);
      await removeStaleTempDirs(dir);
      assert.equal(readdirSync(dir).filter((f) => f.startsWith('.harmonylite-snapshot-')).length, 0);
      const jsm = await jetstreamManager(nc);
      const chunkSubjects = async () =>
        Object.keys(
          (await jsm.streams.info(`OBJ_${bucket}`, { subjects_filter: `$O.${bucket}.C.>` })).state.subjects ??
            {},
        ).length;
      const before = await chunkSubjects();
      assert.ok(before >= objects.length);
      t.diagnostic(
        `chunk subjects left by the kill: ${before - objects.length}; objects: ${objects.join(', ')}`,
      );
      const cleaner = new NatsObjectSnapshotStore({ nc, bucket, orphanChunkAgeMs: 0 });
      await cleaner.open();
      assert.equal(await chunkSubjects(), objects.length, 'only chunks of stored objects are left');
      await cleaner.close();
    } finally {
      await nc.close();
    }
  });
});
