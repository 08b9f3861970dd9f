/**
 * A writing node's own rows while their changes travel (invariant 3): local
 * writes not yet versioned count as newer than anything received, a change of
 * this node coming back never rolls back a later local write, and a received
 * change parked meanwhile applies, or loses, by version once they are back.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { CONFLICTS, quoteIdent as q } from '../../src/cdc/names.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { BatchApplier } from '../../src/replication/batch-applier.ts';
import { pruneConflicts } from '../../src/replication/row-version-store.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { applierOptions, change, digest, message } from './apply-messages.ts';

const dir = tempDir('hl-local-writes-');
after(() => dir.remove());

const SELF = 1;
const OTHER = 2;
let n = 0;

function node() {
  const db = new Database(join(dir.path, `n${++n}.db`));
  db.pragma('journal_mode = WAL');
  db.exec('CREATE TABLE c (id INTEGER PRIMARY KEY, v TEXT, n INTEGER)');
  installCapture(db, new TableFilter([], []), { captureWrites: true, index: { digest, nodeId: SELF } });
  const applier = new BatchApplier(db, applierOptions({ nodeId: SELF, localWrites: true }));
  let seq = 0;
  return {
    db,
    /** One stream message carrying these changes. */
    receive(...records: ReturnType<typeof change>[]) {
      const r = applier.apply(1, [message(++seq, records)]);
      assert.deepEqual(r.deadLettered, []);
      return r.resolved;
    },
    row: () => db.prepare('SELECT id, v, n FROM c WHERE id = 1').raw(true).get() as unknown[] | undefined,
    conflicts: () =>
      db
        .prepare(`SELECT reason, lost_origin, won_origin FROM ${q(CONFLICTS)}`)
        .raw(true)
        .all(),
  };
}

test('an older change received while a local write travels is parked, then loses to it', () => {
  const f = node();
  f.db.exec("INSERT INTO c VALUES (1, 'local', 0)");
  const r = f.receive(change('update', 'c', { id: 1n, v: 'remote', n: 0n }, OTHER, 100));
  assert.equal(r.deferred, 1);
  assert.deepEqual(f.row(), [1, 'local', 0], 'the local write is not rolled back');
  // The local write comes back with the version it was published with: newer.
  f.receive(change('insert', 'c', { id: 1n, v: 'local', n: 0n }, SELF, 200));
  assert.deepEqual(f.row(), [1, 'local', 0]);
  assert.deepEqual(f.conflicts(), [['superseded', OTHER, SELF]], 'the losing change is in the conflict log');
  f.db.close();
});

test('a newer change received while a local write travels applies once the local one is back', () => {
  const f = node();
  f.db.exec("INSERT INTO c VALUES (1, 'local', 0)");
  f.receive(change('update', 'c', { id: 1n, v: 'remote', n: 0n }, OTHER, 300));
  assert.deepEqual(f.row(), [1, 'local', 0]);
  // The local write was versioned before this node saw the remote change: it is older, and loses.
  f.receive(change('insert', 'c', { id: 1n, v: 'local', n: 0n }, SELF, 250));
  assert.deepEqual(f.row(), [1, 'remote', 0], 'every node ends with the newer write');
  f.db.close();
});

test("this node's changes coming back never roll back its later writes (a counter keeps every increment)", () => {
  const f = node();
  f.db.exec("INSERT INTO c VALUES (1, 'x', 0)");
  f.db.exec('UPDATE c SET n = n + 1 WHERE id = 1');
  f.db.exec('UPDATE c SET n = n + 1 WHERE id = 1');
  f.receive(change('insert', 'c', { id: 1n, v: 'x', n: 0n }, SELF, 10));
  assert.deepEqual(f.row(), [1, 'x', 2]);
  f.db.exec('UPDATE c SET n = n + 1 WHERE id = 1');
  f.receive(change('update', 'c', { id: 1n, v: 'x', n: 1n }, SELF, 11));
  f.receive(change('update', 'c', { id: 1n, v: 'x', n: 2n }, SELF, 12));
  assert.deepEqual(f.row(), [1, 'x', 3], 'no increment lost');
  // All back: the row is in step with the index again, and a newer remote change applies at once.
  f.receive(change('update', 'c', { id: 1n, v: 'x', n: 3n }, SELF, 13));
  const r = f.receive(change('update', 'c', { id: 1n, v: 'y', n: 9n }, OTHER, 14));
  assert.equal(r.deferred, 0);
  assert.deepEqual(f.row(), [1, 'y', 9]);
  f.db.close();
});

test('a delete leaves a tombstone: an older insert arriving later does not bring the row back', () => {
  const f = node();
  f.receive(change('delete', 'c', { id: 1n }, OTHER, 50));
  const r = f.receive(change('insert', 'c', { id: 1n, v: 'late', n: 1n }, OTHER, 40));
  assert.equal(r.superseded, 1);
  assert.equal(f.row(), undefined);
  f.db.close();
});

test('the conflict log is bounded by age and by rows, oldest first', () => {
  const f = node();
  const at = f.db.prepare(
    `INSERT INTO ${q(CONFLICTS)} (at, tbl, pk, reason, lost_version, lost_origin, lost_type, lost_row, won_version, won_origin) VALUES (?, 'c', x'00', 'superseded', 1, 2, 'update', NULL, 2, 1)`,
  );
  for (const t of [100, 200, 300, 400, 500]) at.run(t);
  assert.equal(pruneConflicts(f.db, { olderThan: 250, maxRows: 100 }), 2);
  assert.equal(pruneConflicts(f.db, { olderThan: 0, maxRows: 2 }), 1);
  assert.deepEqual(
    f.db
      .prepare(`SELECT at FROM ${q(CONFLICTS)} ORDER BY at`)
      .pluck()
      .all(),
    [400, 500],
  );
  assert.equal(pruneConflicts(f.db, { olderThan: 0, maxRows: 0 }), 2, 'max 0 keeps none');
  f.db.close();
});

test("a received change the row already holds (its origin's write, restored from a snapshot) only moves the index", () => {
  const f = node();
  // A restored file: the row holds another node's write that was still pending when the snapshot was taken.
  f.db.exec("INSERT INTO c VALUES (1, 'theirs', 5)");
  const r = f.receive(change('insert', 'c', { id: 1n, v: 'theirs', n: 5n }, OTHER, 60));
  assert.deepEqual([r.applied, r.deferred], [1, 0]);
  // In step again: a newer change applies at once, it is not parked behind a write that never comes back.
  assert.equal(f.receive(change('update', 'c', { id: 1n, v: 'next', n: 6n }, OTHER, 70)).deferred, 0);
  assert.deepEqual(f.row(), [1, 'next', 6]);
  f.db.close();
});
