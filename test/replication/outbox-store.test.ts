/**
 * Marking published: exactly the rows of the acknowledged batch become state 1
 * and leave the global log, whether their ids form runs (marked by range) or
 * not (a shard's share of a multi-shard window); a refused change becomes
 * state 2. Real SQLite file with the capture triggers.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { changeLogTable, GLOBAL_LOG, quoteIdent as q } from '../../src/cdc/names.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { ChangelogScanner } from '../../src/changelog/changelog-scanner.ts';
import { OutboxStore } from '../../src/replication/outbox-store.ts';
import { WriterQueue } from '../../src/sqlite/writer-queue.ts';
import { tempDir } from '../helpers/temp-dir.ts';

const dir = tempDir('hl-outbox-');
after(() => dir.remove());

test('commit marks exactly the batch: runs by range, scattered ids by list, across two tables', async () => {
  const db = new Database(join(dir.path, 'mark.db'));
  try {
    db.pragma('journal_mode = WAL');
    db.exec(
      'CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE b (k TEXT PRIMARY KEY, v INTEGER)',
    );
    installCapture(db, new TableFilter([], []), { captureWrites: true });
    const insA = db.prepare('INSERT INTO a (v) VALUES (?)');
    const insB = db.prepare('INSERT INTO b (k, v) VALUES (?, ?)');
    db.transaction(() => {
      for (let i = 0; i < 60; i++) {
        insA.run(`a${i}`);
        if (i % 3 === 0) insB.run(`b${i}`, i);
      }
    })();
    const changes = new ChangelogScanner(db).scan(0, 1000).changes;
    assert.equal(changes.length, 80);
    // Table a: ids 1-25 (a run), then every other id from 32 (singles); table b: every other change.
    const chosen = changes.filter((c) =>
      c.table === 'a' ? c.changeId <= 25 || (c.changeId > 30 && c.changeId % 2 === 0) : c.changeId % 2 === 1,
    );
    const refused = changes.find((c) => c.table === 'a' && c.changeId === 27)!;
    const outbox = new OutboxStore(db, { busyTimeoutMs: 1000, writer: new WriterQueue() });
    await outbox.commit(1, chosen, undefined);
    outbox.refuse(refused);

    const state = (table: string) =>
      new Map(
        (
          db
            .prepare(`SELECT id, state FROM ${q(changeLogTable(table))}`)
            .raw(true)
            .all() as [number, number][]
        ).map(([id, s]) => [id, s]),
      );
    const [a, b] = [state('a'), state('b')];
    for (const c of changes) {
      const want = c === refused ? 2 : chosen.includes(c) ? 1 : 0;
      assert.equal((c.table === 'a' ? a : b).get(c.changeId), want, `${c.table} change ${c.changeId}`);
    }
    const pending = db
      .prepare(`SELECT id FROM ${q(GLOBAL_LOG)} ORDER BY id`)
      .pluck()
      .all();
    assert.deepEqual(
      pending,
      changes.filter((c) => c !== refused && !chosen.includes(c)).map((c) => c.globalId),
    );
  } finally {
    db.close();
  }
});
