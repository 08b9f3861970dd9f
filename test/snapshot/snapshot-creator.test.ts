import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { copyFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import {
  CONFLICTS,
  MIGRATIONS,
  GLOBAL_LOG,
  INDEXED_TABLES,
  ORIGIN_SEQS,
  PARKED,
  POSITIONS,
  RETIRED_NAMES,
  ROW_VERSIONS,
} from '../../src/cdc/names.ts';
import { createSnapshotFile } from '../../src/snapshot/snapshot-creator.ts';
import { SnapshotError } from '../../src/snapshot/snapshot-error.ts';
import { digestFile } from '../../src/snapshot/snapshot-file-codec.ts';
import { runCreateTask, runVerifyTask } from '../../src/snapshot/snapshot-tasks.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { capturedDatabase, count, mountTinyTmpfs, schemaNames, setPositions } from './snapshot-test-kit.ts';

const root = tempDir('hl-snap-create-');
after(() => root.remove());
let n = 0;

function fixture(rows = 500, blobBytes = 16): { dir: string; db: string; temp: string } {
  const dir = join(root.path, `case-${++n}`);
  const temp = join(dir, 'tmp');
  const db = join(dir, 'app.db');
  mkdirSync(temp, { recursive: true });
  capturedDatabase(db, rows, { blobBytes });
  setPositions(db, { 1: 40, 2: 17 }, [
    [7, 1, 12],
    [9, 2, 3],
  ]);
  return { dir, db, temp };
}

describe('createSnapshotFile', () => {
  for (const compress of [false, true]) {
    it(`copies the data and positions without our capture (compress = ${compress})`, async () => {
      const f = fixture();
      assert.ok(count(f.db, `SELECT count(*) FROM "${GLOBAL_LOG}"`) > 0, 'fixture has pending changes');
      const created = await createSnapshotFile({
        dbPath: f.db,
        busyTimeoutMs: 1000,
        nodeId: 7,
        streamPrefix: 'p',
        shards: 2,
        compress,
        tempParent: f.temp,
      });
      const m = created.manifest;
      assert.deepEqual(m.positions, { '1': 40, '2': 17 });
      assert.deepEqual(m.originSeqs, [
        { origin: 7, shard: 1, seq: 12 },
        { origin: 9, shard: 2, seq: 3 },
      ]);
      assert.match(m.schemaSql, /^CREATE TABLE items/);
      assert.doesNotMatch(m.schemaSql, /__harmonylite__/);
      assert.equal(m.dataObject, `${m.name}${compress ? '.db.zst' : '.db'}`);
      assert.equal(statSync(created.uploadPath).size, m.dataBytes);

      // What a restoring node gets after verification.
      const out = join(f.dir, 'restored.db');
      const downloaded = join(f.dir, 'download');
      await copyFile(created.uploadPath, downloaded);
      const { digest } = await runVerifyTask({
        kind: 'verify',
        downloadedPath: downloaded,
        outPath: out,
        compressed: compress,
        expected: { checksum: m.checksum, sizeBytes: m.sizeBytes },
        objectName: m.dataObject,
      });
      assert.deepEqual(digest, await digestFile(out));
      const { tables, triggers } = schemaNames(out);
      assert.deepEqual(triggers, []);
      assert.deepEqual(
        tables.filter((t) => !t.startsWith('sqlite_')).sort(),
        // The replicated-state index travels with the rows it describes.
        [
          ORIGIN_SEQS,
          POSITIONS,
          ROW_VERSIONS,
          INDEXED_TABLES,
          PARKED,
          CONFLICTS,
          MIGRATIONS,
          RETIRED_NAMES,
          'items',
        ].sort(),
      );
      assert.equal(count(out, "SELECT count(*) FROM sqlite_sequence WHERE name GLOB '__harmonylite__*'"), 0);
      assert.equal(count(out, 'SELECT count(*) FROM items'), 500);
      assert.equal(count(out, `SELECT stream_seq FROM "${POSITIONS}" WHERE shard = 2`), 17);

      await created.dispose();
      assert.deepEqual(readdirSync(f.temp), [], 'temporary files removed');
    });
  }

  it('keeps internal tables it does not name, and no byte of the dropped change logs', async () => {
    const f = fixture();
    const db = new Database(f.db);
    // Tables of ours that describe the rows (as positions do) travel with them.
    db.exec(
      `INSERT INTO "__harmonylite___row_versions" VALUES ('items', x'01', 42, 1, 0, 0);` +
        `INSERT INTO "__harmonylite___conflicts" (at, tbl, pk, reason, lost_version, lost_origin, lost_type, won_version, won_origin) ` +
        `VALUES (1, 'items', x'01', 'superseded', 1, 2, 'update', 42, 1);` +
        // The migrations applied to these rows' schema: a restored node must not run them again.
        `INSERT INTO "${MIGRATIONS}" (seq, hash, name, status, at) VALUES (1, 'h', '001.sql', 'applied', 1);`,
    );
    // A value that only the change log still holds once the row is written back.
    db.exec(
      "UPDATE items SET name = 'only-in-the-change-log' WHERE id = 1; UPDATE items SET name = 'item-1' WHERE id = 1",
    );
    db.close();
    const created = await createSnapshotFile({
      dbPath: f.db,
      busyTimeoutMs: 1000,
      nodeId: 7,
      streamPrefix: 'p',
      shards: 2,
      compress: false,
      tempParent: f.temp,
    });
    try {
      const tables = schemaNames(created.uploadPath).tables.filter((t) => !t.startsWith('sqlite_'));
      assert.deepEqual(
        tables.sort(),
        [
          ORIGIN_SEQS,
          POSITIONS,
          ROW_VERSIONS,
          INDEXED_TABLES,
          PARKED,
          CONFLICTS,
          MIGRATIONS,
          RETIRED_NAMES,
          'items',
        ].sort(),
      );
      assert.equal(count(created.uploadPath, `SELECT seq FROM "${MIGRATIONS}" WHERE status = 'applied'`), 1);
      assert.equal(count(created.uploadPath, 'SELECT version FROM "__harmonylite___row_versions"'), 42);
      assert.equal(count(created.uploadPath, 'SELECT count(*) FROM "__harmonylite___conflicts"'), 1);
      const bytes = readFileSync(created.uploadPath);
      assert.equal(
        bytes.indexOf('only-in-the-change-log'),
        -1,
        'the dropped change log left its rows in the file',
      );
    } finally {
      await created.dispose();
    }
  });

  it('hands the final data file to the upload and reports the upload failure, leaving nothing behind', async () => {
    const f = fixture(200);
    const uploads: { objectName: string; bytes: number; exists: boolean }[] = [];
    const created = await createSnapshotFile({
      dbPath: f.db,
      busyTimeoutMs: 1000,
      nodeId: 7,
      streamPrefix: 'p',
      shards: 2,
      compress: false,
      tempParent: f.temp,
      upload: async ({ path, objectName, bytes }) => {
        uploads.push({ objectName, bytes, exists: existsSync(path) });
      },
    });
    assert.deepEqual(uploads, [
      { objectName: created.manifest.dataObject, bytes: created.manifest.dataBytes, exists: true },
    ]);
    await created.dispose();
    await assert.rejects(
      createSnapshotFile({
        dbPath: f.db,
        busyTimeoutMs: 1000,
        nodeId: 7,
        streamPrefix: 'p',
        shards: 2,
        compress: true,
        tempParent: f.temp,
        upload: async () => {
          throw new Error('store refused');
        },
      }),
      /store refused/,
    );
    assert.deepEqual(readdirSync(f.temp), []);
  });

  it('a damaged download fails verification with ERR_SNAPSHOT_CORRUPT', async () => {
    const f = fixture(200);
    const created = await createSnapshotFile({
      dbPath: f.db,
      busyTimeoutMs: 1000,
      nodeId: 7,
      streamPrefix: 'p',
      shards: 2,
      compress: false,
      tempParent: f.temp,
    });
    const downloaded = join(f.dir, 'download');
    await copyFile(created.uploadPath, downloaded);
    const handle = await open(downloaded, 'r+');
    await handle.write(Buffer.from([0xff, 0xee]), 0, 2, 5000);
    await handle.close();
    await assert.rejects(
      runVerifyTask({
        kind: 'verify',
        downloadedPath: downloaded,
        outPath: join(f.dir, 'out.db'),
        compressed: false,
        expected: { checksum: created.manifest.checksum, sizeBytes: created.manifest.sizeBytes },
        objectName: created.manifest.dataObject,
      }),
      (err) => {
        assert.ok(err instanceof SnapshotError);
        assert.equal(err.code, 'ERR_SNAPSHOT_CORRUPT');
        assert.match(err.message, /checksum xxh64:[0-9a-f]{16}, the manifest says/);
        return true;
      },
    );
    assert.equal(existsSync(join(f.dir, 'out.db')), false);
    await created.dispose();
  });

  it('a file damaged before it was checksummed fails quick_check with ERR_SNAPSHOT_CORRUPT', async () => {
    const f = fixture(2000, 64);
    const created = await createSnapshotFile({
      dbPath: f.db,
      busyTimeoutMs: 1000,
      nodeId: 7,
      streamPrefix: 'p',
      shards: 2,
      compress: false,
      tempParent: f.temp,
    });
    const downloaded = join(f.dir, 'download');
    await copyFile(created.uploadPath, downloaded);
    const db = new Database(downloaded, { readonly: true });
    const root = db
      .prepare("SELECT rootpage FROM sqlite_schema WHERE name = 'items'")
      .pluck()
      .get() as number;
    const pageSize = db.pragma('page_size', { simple: true }) as number;
    db.close();
    // The items table's root page gets an invalid b-tree page type; the checksum is taken afterwards.
    const handle = await open(downloaded, 'r+');
    await handle.write(Buffer.from([0x07]), 0, 1, (root - 1) * pageSize);
    await handle.close();
    const digest = await digestFile(downloaded);
    await assert.rejects(
      runVerifyTask({
        kind: 'verify',
        downloadedPath: downloaded,
        outPath: join(f.dir, 'out.db'),
        compressed: false,
        expected: digest,
        objectName: created.manifest.dataObject,
      }),
      (err) => {
        assert.ok(err instanceof SnapshotError);
        assert.equal(err.code, 'ERR_SNAPSHOT_CORRUPT');
        assert.match(err.message, /is damaged: (PRAGMA quick_check|not a readable SQLite database)/);
        return true;
      },
    );
    assert.equal(existsSync(join(f.dir, 'out.db')), false);
    await created.dispose();
  });

  it('a full temporary directory gives a clear error, no crash, no leftovers', async (t) => {
    const f = fixture(300, 8192); // ~2.5 MB of incompressible rows
    const mnt = join(f.dir, 'tiny');
    const unmount = mountTinyTmpfs(mnt, 1024 * 1024);
    if (unmount === undefined) {
      // Without mount (not root): /dev/full fails every write with ENOSPC, as a full disk does.
      await assert.rejects(
        runCreateTask({
          kind: 'create',
          dbPath: f.db,
          copyPath: '/dev/full',
          busyTimeoutMs: 1000,
          compressionLevel: 1,
        }),
        /disk is full|SQLITE_FULL|no space/i,
      );
      t.diagnostic('tmpfs mount not available: tested the ENOSPC path through /dev/full only');
      return;
    }
    try {
      // 1. The early check (statfs) refuses before writing anything.
      await assert.rejects(
        createSnapshotFile({
          dbPath: f.db,
          busyTimeoutMs: 1000,
          nodeId: 7,
          streamPrefix: 'p',
          shards: 2,
          compress: true,
          tempParent: mnt,
        }),
        (err) => {
          assert.ok(err instanceof SnapshotError, String(err));
          assert.equal(err.code, 'ERR_SNAPSHOT_NO_SPACE');
          assert.match(
            err.message,
            new RegExp(`^not enough disk space in ${mnt} for a snapshot of ~\\d+ MB`),
          );
          return true;
        },
      );
      assert.deepEqual(readdirSync(mnt), []);
      // 2. The write itself hitting ENOSPC (VACUUM INTO: SQLITE_FULL) is reported the same way.
      await assert.rejects(
        runCreateTask({
          kind: 'create',
          dbPath: f.db,
          copyPath: join(mnt, 'copy.db'),
          busyTimeoutMs: 1000,
          compressionLevel: 1,
        }),
        (err) => {
          assert.match(String((err as { code?: string }).code), /SQLITE_FULL/);
          return true;
        },
      );
    } finally {
      unmount();
    }
  });
});
