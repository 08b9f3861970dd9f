/**
 * Schema changes made by hand on every node while writes are in flight, with
 * real nats-server, two nodes on one shard (so a held message would stop every
 * table) and the stock sqlite3 shell and sqlite-utils as the application:
 * changes naming a renamed table or column are mapped to the new name, changes
 * to a dropped table are skipped (counted, logged), changes an application
 * trigger or constraint refuses go to the conflict log; no shard stays held.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, describe, test } from 'node:test';
import { CONFLICTS, DEAD_LETTERS } from '../../src/cdc/names.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query, sqlite3Shell } from './converge-helpers.ts';

function sqliteUtils(...args: string[]): void {
  const r = spawnSync('sqlite-utils', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `sqlite-utils ${args.join(' ')}: ${r.stderr}`);
}

async function counter(node: TestNode, name: 'changesRefused' | 'oldSchemaChanges', outcome?: string) {
  const m = await node.node.metrics[name].get();
  return m.values
    .filter((v) => outcome === undefined || (v.labels as Record<string, unknown>).outcome === outcome)
    .reduce((s, v) => s + v.value, 0);
}

function held(node: TestNode): unknown[] {
  return node.node
    .status()
    .shards.filter((s) => s.state.type === 'waiting-for-schema')
    .map((s) => s.state);
}

describe('schema changes by hand while writing', () => {
  const servers: TestNatsServer[] = [];
  const dirs: { remove(): void; path: string }[] = [];
  const nodes: TestNode[] = [];

  after(() => closeAll(nodes, ...servers.map((s) => () => s.close()), ...dirs.map((d) => () => d.remove())));

  /** Two fresh nodes on one shard, each database created from its schema. */
  async function pair(schema1: string, schema2 = schema1): Promise<[TestNode, TestNode]> {
    const dir = tempDir('hl-schema-evo-');
    dirs.push(dir);
    // A server per pair: each scenario starts from empty streams.
    const nats = await startNatsServer();
    servers.push(nats);
    const start = (nodeId: number, schema: string) =>
      startNode({
        dir: dir.path,
        nodeId,
        urls: [nats.url],
        schema,
        configure: (c) => {
          c.replication_log.shards = 1;
        },
      });
    const a = await start(1, schema1);
    nodes.push(a);
    const b = await start(2, schema2);
    nodes.push(b);
    return [a, b];
  }

  const rows = (node: TestNode, sql: string) => query(node.dbPath, sql);
  async function same(a: TestNode, b: TestNode, sql: string): Promise<unknown[]> {
    let seen: unknown[] = [];
    await waitFor(
      `${sql} equal on both nodes`,
      () => {
        seen = [rows(a, sql), rows(b, sql)];
        return JSON.stringify(seen[0], big) === JSON.stringify(seen[1], big);
      },
      { timeoutMs: 30_000, seen: () => seen },
    );
    return rows(a, sql);
  }

  test('a change refused by an application trigger or CHECK goes to the conflict log; the shard goes on', async () => {
    const schema =
      'CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL, amount INTEGER);' +
      'CREATE TABLE notes (id INTEGER PRIMARY KEY, v TEXT);';
    // Node 2 is stricter: closed orders are immutable, amounts are never negative,
    const [n1, n2] = await pair(
      schema,
      'CREATE TABLE orders (id INTEGER PRIMARY KEY, status TEXT NOT NULL, amount INTEGER CHECK (amount >= 0));' +
        'CREATE TABLE notes (id INTEGER PRIMARY KEY, v TEXT);' +
        "CREATE TRIGGER orders_closed BEFORE UPDATE ON orders WHEN OLD.status = 'closed' " +
        "BEGIN SELECT RAISE(ABORT, 'closed orders are immutable'); END;" +
        // and it silently ignores notes marked so.
        "CREATE TRIGGER notes_ignored BEFORE INSERT ON notes WHEN NEW.v = 'ignored' BEGIN SELECT RAISE(IGNORE); END;",
    );
    sqlite3Shell(n1.dbPath, "INSERT INTO orders VALUES (1, 'closed', 10), (2, 'open', 20);");
    await same(n1, n2, 'SELECT * FROM orders ORDER BY id');
    // One transaction: a refused update, a refused insert, and changes node 2 takes.
    sqlite3Shell(
      n1.dbPath,
      "BEGIN; UPDATE orders SET amount = 11 WHERE id = 1; INSERT INTO orders VALUES (3, 'open', -5);" +
        "UPDATE orders SET amount = 21 WHERE id = 2; INSERT INTO notes VALUES (1, 'same message');" +
        "INSERT INTO notes VALUES (3, 'ignored'); COMMIT;",
    );
    sqlite3Shell(n1.dbPath, "INSERT INTO notes VALUES (2, 'later');");
    await waitFor(
      'the later note on node 2',
      () => rows(n2, 'SELECT count(*) FROM notes WHERE id = 2')[0]![0] === 1n,
      {
        seen: () => [rows(n2, 'SELECT * FROM notes'), held(n2)],
      },
    );
    assert.deepEqual(rows(n2, 'SELECT * FROM orders ORDER BY id'), [
      [1n, 'closed', 10n],
      [2n, 'open', 21n],
    ]);
    assert.deepEqual(held(n2), []);
    const refused = rows(
      n2,
      `SELECT tbl, reason, lost_type, detail FROM ${CONFLICTS} ORDER BY id`,
    ) as string[][];
    assert.equal(refused.length, 3, JSON.stringify(refused));
    assert.deepEqual(
      refused.map((r) => [r[0], r[1], r[2]]),
      [
        ['orders', 'refused', 'update'],
        ['orders', 'refused', 'insert'],
        ['notes', 'refused', 'insert'],
      ],
    );
    assert.match(refused[0]![3]!, /closed orders are immutable/);
    assert.match(refused[1]![3]!, /CHECK constraint failed/);
    assert.match(refused[2]![3]!, /RAISE\(IGNORE\)/);
    assert.deepEqual(rows(n2, 'SELECT id FROM notes ORDER BY id'), [[1n], [2n]]);
    // Counted once the apply result is back from the shard worker, just after its commit.
    await waitFor('3 refusals counted', async () => (await counter(n2, 'changesRefused')) === 3);
    assert.ok(n2.logs.has(/refused by this node/), 'logged');
    assert.deepEqual(rows(n2, `SELECT count(*) FROM ${DEAD_LETTERS}`), [[0n]]);
  });

  test('DROP TABLE on one node first: changes to it are skipped there, counted and logged; other tables go on', async () => {
    const schema =
      'CREATE TABLE gone (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE keep (id INTEGER PRIMARY KEY, v TEXT);';
    const [n1, n2] = await pair(schema);
    sqlite3Shell(n2.dbPath, 'DROP TABLE gone;');
    await waitFor('node 2 to drop capture of gone', () => !n2.node.tables.includes('gone'));
    sqlite3Shell(n1.dbPath, "INSERT INTO gone VALUES (1, 'a'); INSERT INTO keep VALUES (1, 'k1');");
    await waitFor('keep 1 on node 2', () => rows(n2, 'SELECT count(*) FROM keep')[0]![0] === 1n, {
      seen: () => held(n2),
    });
    sqlite3Shell(n1.dbPath, "INSERT INTO keep VALUES (2, 'k2'); DROP TABLE gone;");
    sqlite3Shell(n2.dbPath, "INSERT INTO keep VALUES (3, 'k3');");
    await same(n1, n2, 'SELECT * FROM keep ORDER BY id');
    assert.equal(rows(n2, 'SELECT count(*) FROM keep')[0]![0], 3n);
    assert.deepEqual([held(n1), held(n2)], [[], []]);
    await waitFor(
      'the skipped change counted',
      async () => (await counter(n2, 'oldSchemaChanges', 'skipped')) >= 1,
    );
    assert.ok(n2.logs.has(/dropped table or column/));
  });

  test('RENAME COLUMN and RENAME TO on node 2 first, writes on both: mapped there, held on node 1 until its own rename', async () => {
    const schema = 'CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);';
    const [n1, n2] = await pair(schema);
    sqlite3Shell(n1.dbPath, "INSERT INTO people VALUES (1, 'ann', 30);");
    await same(n1, n2, 'SELECT * FROM people');
    // A write on node 2 and its rename in one go: its own change comes back under the old names.
    sqlite3Shell(
      n2.dbPath,
      "INSERT INTO people VALUES (2, 'bob', 40); ALTER TABLE people RENAME COLUMN age TO years;" +
        'ALTER TABLE people RENAME TO persons;',
    );
    await waitFor('node 2 to capture persons', () => n2.node.tables.includes('persons'));
    sqlite3Shell(
      n1.dbPath,
      "INSERT INTO people VALUES (3, 'cat', 50); UPDATE people SET age = 31 WHERE id = 1;",
    );
    sqlite3Shell(n2.dbPath, "INSERT INTO persons VALUES (4, 'dan', 60);");
    await waitFor(
      'node 2 to take node 1 writes under its names',
      () => rows(n2, 'SELECT count(*) FROM persons WHERE id = 3')[0]![0] === 1n,
    );
    await waitFor('node 1 to wait for persons', () => held(n1).length === 1, { seen: () => held(n1) });
    sqlite3Shell(
      n1.dbPath,
      'ALTER TABLE people RENAME COLUMN age TO years; ALTER TABLE people RENAME TO persons;',
    );
    const all = await same(n1, n2, 'SELECT id, name, years FROM persons ORDER BY id');
    assert.deepEqual(all, [
      [1n, 'ann', 31n],
      [2n, 'bob', 40n],
      [3n, 'cat', 50n],
      [4n, 'dan', 60n],
    ]);
    await waitFor('no shard held', () => held(n1).length + held(n2).length === 0);
    await waitFor(
      'mapped changes counted',
      async () => (await counter(n2, 'oldSchemaChanges', 'mapped')) >= 1,
    );
    assert.deepEqual(
      [rows(n1, `SELECT count(*) FROM ${DEAD_LETTERS}`), rows(n2, `SELECT count(*) FROM ${DEAD_LETTERS}`)],
      [[[0n]], [[0n]]],
    );
  });

  test('every node renames a column, renames a table and drops a table, writes in flight', async () => {
    const schema =
      'CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT); CREATE TABLE scratch (id INTEGER PRIMARY KEY, v TEXT);' +
      'CREATE TABLE other (id INTEGER PRIMARY KEY, v TEXT);';
    const [n1, n2] = await pair(schema);
    // Each node: writes under the old names, the DDL, writes under the new names; node 2 right
    // after node 1, while node 1's changes are on their way to it.
    const run = (n: TestNode, base: number) =>
      sqlite3Shell(
        n.dbPath,
        `INSERT INTO t VALUES (${base + 1}, 'old ${base}'); INSERT INTO scratch VALUES (${base + 1}, 'x');` +
          `UPDATE t SET a = 'touched' WHERE id = ${base + 1};` +
          'ALTER TABLE t RENAME COLUMN a TO b; ALTER TABLE t RENAME TO u; DROP TABLE scratch;' +
          `INSERT INTO u VALUES (${base + 2}, 'new ${base}'); INSERT INTO other VALUES (${base + 1}, 'o');`,
      );
    run(n1, 100);
    run(n2, 200);
    sqlite3Shell(n1.dbPath, "INSERT INTO other VALUES (1000, 'after');");
    const all = await same(n1, n2, 'SELECT id, b FROM u ORDER BY id');
    assert.deepEqual(all, [
      [101n, 'touched'],
      [102n, 'new 100'],
      [201n, 'touched'],
      [202n, 'new 200'],
    ]);
    await same(n1, n2, 'SELECT * FROM other ORDER BY id');
    assert.equal(rows(n2, 'SELECT count(*) FROM other')[0]![0], 3n);
    await waitFor('no shard held', () => held(n1).length + held(n2).length === 0, {
      seen: () => [held(n1), held(n2)],
    });
    assert.deepEqual(
      [rows(n1, `SELECT count(*) FROM ${DEAD_LETTERS}`), rows(n2, `SELECT count(*) FROM ${DEAD_LETTERS}`)],
      [[[0n]], [[0n]]],
    );
  });

  test('rolling sqlite-utils transform --rename age years, node 2 first, writes on both: nothing lost', async () => {
    const schema = 'CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, age INTEGER);';
    const [n1, n2] = await pair(schema);
    sqlite3Shell(n1.dbPath, "INSERT INTO people VALUES (1, 'ann', 30), (2, 'bob', 40);");
    await same(n1, n2, 'SELECT * FROM people ORDER BY id');
    // Node 2 writes, then rebuilds at once: the write is published under the old name.
    sqlite3Shell(n2.dbPath, "INSERT INTO people VALUES (3, 'cat', 50);");
    sqliteUtils('transform', n2.dbPath, 'people', '--rename', 'age', 'years');
    sqlite3Shell(
      n2.dbPath,
      "INSERT INTO people VALUES (4, 'dan', 60); UPDATE people SET years = 41 WHERE id = 2;",
    );
    sqlite3Shell(
      n1.dbPath,
      "INSERT INTO people VALUES (5, 'eve', 70); UPDATE people SET age = 31 WHERE id = 1;",
    );
    await waitFor(
      'node 2 to take node 1 writes',
      () =>
        rows(n2, 'SELECT years FROM people WHERE id IN (1, 5) ORDER BY id').length === 2 &&
        rows(n2, 'SELECT years FROM people WHERE id = 1')[0]![0] === 31n,
      {
        seen: () => [rows(n2, 'SELECT * FROM people ORDER BY id'), held(n2)],
      },
    );
    sqliteUtils('transform', n1.dbPath, 'people', '--rename', 'age', 'years');
    sqlite3Shell(n1.dbPath, "INSERT INTO people VALUES (6, 'fay', 80);");
    const all = await same(n1, n2, 'SELECT id, name, years FROM people ORDER BY id');
    assert.deepEqual(all, [
      [1n, 'ann', 31n],
      [2n, 'bob', 41n],
      [3n, 'cat', 50n],
      [4n, 'dan', 60n],
      [5n, 'eve', 70n],
      [6n, 'fay', 80n],
    ]);
    await waitFor('no shard held', () => held(n1).length + held(n2).length === 0, {
      seen: () => [held(n1), held(n2)],
    });
    assert.deepEqual(
      [rows(n1, `SELECT count(*) FROM ${DEAD_LETTERS}`), rows(n2, `SELECT count(*) FROM ${DEAD_LETTERS}`)],
      [[[0n]], [[0n]]],
    );
  });
});

function big(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? `${v}n` : v;
}
