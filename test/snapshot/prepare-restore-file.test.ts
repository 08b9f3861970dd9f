import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { changeLogTable, DEAD_LETTERS, GLOBAL_LOG, OUTBOX } from '../../src/cdc/names.ts';
import { writeSnapshotCopy } from '../../src/snapshot/snapshot-copy.ts';
import {
  carryOverLocalState,
  lastGlobalId,
  prepareRestoreFile,
  unpublishedChanges,
} from '../../src/snapshot/prepare-restore-file.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { capturedDatabase, count, schemaNames } from './snapshot-test-kit.ts';

const root = tempDir('hl-prepare-');
after(() => root.remove());

describe('preparing a snapshot file for the swap', () => {
  it("installs capture at the live page size and carries this node's local state over", () => {
    const dir = join(root.path, 'carry');
    mkdirSync(dir);
    // The snapshot: another node's database, 8 KiB pages, copied without capture.
    const other = join(dir, 'other.db');
    const o = new Database(other);
    o.pragma('page_size = 8192');
    o.close();
    capturedDatabase(other, 50);
    const source = join(dir, 'source.db');
    writeSnapshotCopy({ dbPath: other, outPath: source, busyTimeoutMs: 1000 });

    // The live database: 4 KiB pages, 3 pending changes, a refused one, a batch in flight, a dead letter.
    const live = join(dir, 'live.db');
    capturedDatabase(live, 3);
    const l = new Database(live);
    const log = changeLogTable('items');
    l.prepare(`UPDATE "${log}" SET state = 2 WHERE id = 1`).run(); // refused as too big
    l.prepare(`DELETE FROM "${GLOBAL_LOG}" WHERE change_table_id = 1`).run();
    l.prepare(
      `INSERT INTO "${OUTBOX}" (shard, seq, last_global_id, payload) VALUES (1, 7, 3, x'01'), (2, 4, NULL, NULL)`,
    ).run();
    l.prepare(
      `INSERT INTO "${DEAD_LETTERS}" (shard, stream_seq, msg_id, reason, payload, created_at) VALUES (1, 9, 'x', 'bad', x'00', 1)`,
    ).run();
    l.close();
    const reader = new Database(live, { readonly: true });
    assert.equal(unpublishedChanges(reader), 2);
    assert.equal(lastGlobalId(reader), 3);
    assert.equal(unpublishedChanges(reader, 2), 1);
    reader.close();

    prepareRestoreFile({
      path: source,
      liveDbPath: live,
      busyTimeoutMs: 1000,
      includeTables: [],
      excludeTables: [],
      captureWrites: true,
    });
    const s1 = new Database(source, { readonly: true });
    assert.equal(s1.pragma('page_size', { simple: true }), 4096);
    assert.equal(s1.pragma('journal_mode', { simple: true }), 'delete');
    s1.close();
    assert.equal(schemaNames(source).triggers.length, 3, 'capture installed');

    const carried = carryOverLocalState({
      sourcePath: source,
      liveDbPath: live,
      ownOriginSeqs: { '2': 10, '3': 5 },
    });
    assert.deepEqual(carried, { changes: 3, deadLetters: 1, droppedColumns: [] });
    assert.equal(count(source, `SELECT count(*) FROM "${log}"`), 3);
    assert.equal(count(source, `SELECT count(*) FROM "${log}" WHERE state = 2`), 1);
    assert.equal(count(source, `SELECT count(*) FROM "${GLOBAL_LOG}"`), 2);
    assert.equal(count(source, `SELECT count(*) FROM "${DEAD_LETTERS}"`), 1);
    const s = new Database(source, { readonly: true });
    assert.deepEqual(
      s.prepare(`SELECT shard, seq, payload IS NOT NULL AS busy FROM "${OUTBOX}" ORDER BY shard`).all(),
      [
        { shard: 1, seq: 7, busy: 1 }, // in flight: keeps its number
        { shard: 2, seq: 10, busy: 0 }, // raised to what the cluster saw of this node
        { shard: 3, seq: 5, busy: 0 },
      ],
    );
    assert.equal(s.prepare('SELECT seq FROM sqlite_sequence WHERE name = ?').pluck().get(GLOBAL_LOG), 3);
    // The snapshot's user data is untouched.
    assert.equal(s.prepare('SELECT count(*) FROM items').pluck().get(), 50);
    s.close();

    // Idempotent: a second carry-over replaces the first.
    copyFileSync(source, join(dir, 'before-second.db'));
    assert.deepEqual(
      carryOverLocalState({ sourcePath: source, liveDbPath: live, ownOriginSeqs: {} }).changes,
      3,
    );
    assert.equal(count(source, `SELECT count(*) FROM "${log}"`), 3);
  });
});
