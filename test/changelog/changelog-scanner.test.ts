/**
 * ChangelogScanner: pending changes in global-log (commit) order across
 * tables, at most `scan_max_changes` per pass, continuing from `lastGlobalId`;
 * changes of tables no longer captured come back as orphans.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { GLOBAL_LOG, quoteIdent as q } from '../../src/cdc/names.ts';
import { ChangelogScanner, type PendingChange } from '../../src/changelog/changelog-scanner.ts';
import { brief, captureFixture, sqlite3, sqlRow } from '../cdc/capture-fixture.ts';

const SCHEMA =
  'CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE b (k TEXT PRIMARY KEY, n INTEGER);';

function withScanner<T>(path: string, fn: (scanner: ChangelogScanner) => T): T {
  const read = new Database(path, { readonly: true });
  try {
    return fn(new ChangelogScanner(read));
  } finally {
    read.close();
  }
}

test('changes of several tables come out in global (commit) order, with ids and keys', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(
    f.path,
    "INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES ('k', 1); INSERT INTO a VALUES (2, 'y');",
  );
  sqlite3(
    f.path,
    'BEGIN; UPDATE b SET n = 2; DELETE FROM a WHERE id = 1; UPDATE a SET id = 3 WHERE id = 2; COMMIT;',
  );
  const { changes, orphans, lastGlobalId } = withScanner(f.path, (s) => s.scan(0, 100));
  assert.deepEqual(orphans, []);
  assert.deepEqual(changes.map(brief), [
    ['a', 'insert', { id: 1n, v: 'x' }],
    ['b', 'insert', { k: 'k', n: 1n }],
    ['a', 'insert', { id: 2n, v: 'y' }],
    ['b', 'update', { k: 'k', n: 2n }],
    ['a', 'delete', { id: 1n, v: 'x' }],
    ['a', 'delete', { id: 2n, v: 'y' }],
    ['a', 'update', { id: 3n, v: 'y' }],
  ]);
  assert.deepEqual(
    changes.map((c) => c.globalId),
    [1, 2, 3, 4, 5, 6, 7],
  );
  assert.deepEqual(
    changes.map((c) => [c.table, c.changeId]),
    [
      ['a', 1],
      ['b', 1],
      ['a', 2],
      ['b', 2],
      ['a', 3],
      ['a', 4],
      ['a', 5],
    ],
  );
  assert.deepEqual(
    changes.map((c) => c.key),
    [[1n], ['k'], [2n], ['k'], [1n], [2n], [3n]],
  );
  assert.equal(lastGlobalId, 7);
  const now = Date.now();
  for (const c of changes)
    assert.ok(c.createdAt > now - 60_000 && c.createdAt <= now + 1000, 'created_at is ms');
});

test('scan_max_changes: each pass returns at most that many, and continues from lastGlobalId', () => {
  using f = captureFixture(SCHEMA);
  const values = Array.from({ length: 25 }, (_, i) => `(${i + 1}, 'v${i + 1}')`).join(', ');
  sqlite3(f.path, `INSERT INTO a VALUES ${values}; INSERT INTO b VALUES ('last', 0);`);
  const passes = withScanner(f.path, (s) => {
    assert.equal(s.countPending(), 26);
    const out: PendingChange[][] = [];
    let cursor = 0;
    for (;;) {
      const res = s.scan(cursor, 10);
      assert.ok(res.changes.length <= 10);
      if (res.changes.length === 0) {
        assert.equal(res.lastGlobalId, cursor, 'an empty pass keeps the cursor');
        break;
      }
      out.push(res.changes);
      cursor = res.lastGlobalId;
    }
    return out;
  });
  assert.deepEqual(
    passes.map((p) => p.length),
    [10, 10, 6],
  );
  const all = passes.flat();
  assert.deepEqual(
    all.map((c) => c.globalId),
    Array.from({ length: 26 }, (_, i) => i + 1),
  );
  assert.deepEqual(sqlRow(all.at(-1)!), { k: 'last', n: 0n });
});

test('a scan skips global ids already handled, and sees changes committed after the scanner was made', () => {
  using f = captureFixture(SCHEMA);
  const read = new Database(f.path, { readonly: true });
  try {
    const scanner = new ChangelogScanner(read);
    assert.deepEqual(scanner.scan(0, 10), { changes: [], orphans: [], lastGlobalId: 0 });
    sqlite3(f.path, "INSERT INTO a VALUES (1, 'x'), (2, 'y'), (3, 'z');");
    // The publisher deletes global rows it published: the scanner only sees what is left.
    f.db.prepare(`DELETE FROM ${q(GLOBAL_LOG)} WHERE id = 2`).run();
    assert.deepEqual(
      scanner.scan(0, 10).changes.map((c) => c.key),
      [[1n], [3n]],
    );
    assert.deepEqual(
      scanner.scan(1, 10).changes.map((c) => c.key),
      [[3n]],
    );
    assert.equal(scanner.countPending(), 2);
  } finally {
    read.close();
  }
});

test('changes of a table no longer captured (excluded) are orphans, not changes', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(
    f.path,
    "INSERT INTO a VALUES (1, 'x'); INSERT INTO b VALUES ('k', 1); INSERT INTO a VALUES (2, 'y');",
  );
  const read = new Database(f.path, { readonly: true });
  try {
    const scanner = new ChangelogScanner(read);
    assert.equal(scanner.scan(0, 10).changes.length, 3);
    f.install([], ['a']); // `a` is excluded from now on
    scanner.invalidate(); // what the node does after a schema change
    const res = scanner.scan(0, 10);
    assert.deepEqual(res.changes.map(brief), [['b', 'insert', { k: 'k', n: 1n }]]);
    assert.deepEqual(res.orphans, [1, 3]);
    assert.equal(res.lastGlobalId, 3);
  } finally {
    read.close();
  }
});

test('a pass reads only the rows the global log points at, not published rows between them', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(f.path, "INSERT INTO a VALUES (1, 'stuck');");
  // 200k rows already published (state 1, out of the global log), as when other shards run ahead of a stuck one.
  f.db.exec(
    `WITH RECURSIVE n(i) AS (SELECT 2 UNION ALL SELECT i + 1 FROM n WHERE i < 200001)
     INSERT INTO ${q('__harmonylite__a_change_log')} (id, val_id, val_v, type, created_at, state)
     SELECT i, i, 'published', 'insert', 0, 1 FROM n`,
  );
  sqlite3(f.path, "INSERT INTO a VALUES (2, 'pending');");
  withScanner(f.path, (s) => {
    // The fastest of three passes: a pass descheduled by other load does not fail the test.
    let ms = Infinity;
    let res = s.scan(0, 512);
    for (let i = 0; i < 3; i++) {
      const t0 = performance.now();
      res = s.scan(0, 512);
      ms = Math.min(ms, performance.now() - t0);
    }
    assert.deepEqual(
      res.changes.map((c) => [c.changeId, c.row.v]),
      [
        [1, 'stuck'],
        [200002, 'pending'],
      ],
    );
    // Reading the 200k rows in between took 0.5-3 s per pass on this machine; a pass now does two lookups.
    assert.ok(ms < 100, `one pass took ${ms.toFixed(0)} ms`);
  });
});
