/**
 * Three nodes (shards 2) on one real nats-server: inserts, updates and deletes
 * made on each node reach the others, one writer being the stock sqlite3
 * shell; key-changing updates leave no old row anywhere; rowid-keyed,
 * composite-key and WITHOUT ROWID tables replicate.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type Database from 'better-sqlite3';
import { appConnection, startNode, waitConverged, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query, sqlite3Shell } from './converge-helpers.ts';

const SCHEMA = `
  CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);
  CREATE TABLE notes (body TEXT, n INTEGER);
  CREATE TABLE pairs (a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b));
  CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
  CREATE TABLE "odd ""table""" ("select" INTEGER PRIMARY KEY, "from" TEXT);
`;
const TABLES = ['users', 'notes', 'pairs', 'kv', 'odd "table"'];

const dir = tempDir('hl-converge-basic-');
let nats: TestNatsServer | undefined;
const nodes: TestNode[] = [];
/** Application connections of nodes 1 and 3 (better-sqlite3, default settings); node 2 is written by the sqlite3 shell. */
let app1: Database.Database;
let app3: Database.Database;
let paths: string[] = [];

before(async () => {
  nats = await startNatsServer();
  for (const nodeId of [1, 2, 3]) {
    nodes.push(
      await startNode({
        dir: dir.path,
        nodeId,
        urls: [nats.url],
        schema: SCHEMA,
        configure: (c) => {
          c.replication_log.shards = 2;
        },
      }),
    );
  }
  paths = nodes.map((n) => n.dbPath);
  app1 = appConnection(paths[0]!);
  app3 = appConnection(paths[2]!);
});

after(async () => {
  app1?.close();
  app3?.close();
  await closeAll(nodes, () => nats?.close(), dir.remove);
});

/** Waits until `sql` returns `expected` (JSON-compared) on every node. */
async function everywhere(sql: string, expected: unknown): Promise<void> {
  const want = JSON.stringify(expected);
  let seen: string[] = [];
  await waitFor(
    `${sql} = ${want} on every node`,
    () => {
      seen = paths.map((p) =>
        JSON.stringify(query(p, sql), (_k, v) => (typeof v === 'bigint' ? Number(v) : v)),
      );
      return seen.every((s) => s === want);
    },
    { timeoutMs: 20_000, seen: () => seen },
  );
}

test('inserts on each node, one through the sqlite3 shell, reach every node', async () => {
  app1.prepare('INSERT INTO users (id, name, email) VALUES (?, ?, ?)').run(1, 'ada', 'ada@one');
  app1.prepare('INSERT INTO pairs VALUES (?, ?, ?)').run('x', 1, 'from node 1');
  app1.prepare('INSERT INTO notes (body, n) VALUES (?, ?)').run('note of node 1', 1);
  sqlite3Shell(
    paths[1]!,
    `INSERT INTO users (id, name, email) VALUES (2, 'bob', 'bob@two');
     INSERT INTO kv VALUES ('two', x'0102ff');
     INSERT INTO "odd ""table""" ("select", "from") VALUES (7, 'shell');`,
  );
  app3.transaction(() => {
    app3.prepare('INSERT INTO users (id, name, email) VALUES (?, ?, ?)').run(3, 'cy', null);
    app3.prepare('INSERT INTO pairs VALUES (?, ?, ?)').run('x', 3, 'from node 3');
    app3.prepare('INSERT INTO kv VALUES (?, ?)').run('three', Buffer.from('trois'));
  })();

  await everywhere('SELECT id, name, email FROM users ORDER BY id', [
    [1, 'ada', 'ada@one'],
    [2, 'bob', 'bob@two'],
    [3, 'cy', null],
  ]);
  await everywhere('SELECT a, b, v FROM pairs ORDER BY a, b', [
    ['x', 1, 'from node 1'],
    ['x', 3, 'from node 3'],
  ]);
  await everywhere('SELECT k, hex(v) FROM kv ORDER BY k', [
    ['three', '74726F6973'],
    ['two', '0102FF'],
  ]);
  await everywhere('SELECT rowid, body, n FROM notes', [[1, 'note of node 1', 1]]);
  await everywhere('SELECT "select", "from" FROM "odd ""table"""', [[7, 'shell']]);
  await waitConverged(paths, TABLES);
});

test("updates of other nodes' rows reach every node", async () => {
  sqlite3Shell(
    paths[1]!,
    `UPDATE users SET email = 'ada@shell' WHERE id = 1;
     UPDATE pairs SET v = 'changed by the shell' WHERE a = 'x' AND b = 3;
     UPDATE notes SET n = n + 41 WHERE rowid = 1;`,
  );
  app1.prepare('UPDATE kv SET v = ? WHERE k = ?').run(Buffer.from([0, 0, 1]), 'two');
  app3.prepare('UPDATE "odd ""table""" SET "from" = ? WHERE "select" = 7').run('node 3');
  app3.prepare('UPDATE users SET name = ? WHERE id = 2').run('robert');

  await everywhere('SELECT id, name, email FROM users ORDER BY id', [
    [1, 'ada', 'ada@shell'],
    [2, 'robert', 'bob@two'],
    [3, 'cy', null],
  ]);
  await everywhere('SELECT a, b, v FROM pairs ORDER BY a, b', [
    ['x', 1, 'from node 1'],
    ['x', 3, 'changed by the shell'],
  ]);
  await everywhere('SELECT k, hex(v) FROM kv ORDER BY k', [
    ['three', '74726F6973'],
    ['two', '000001'],
  ]);
  await everywhere('SELECT rowid, body, n FROM notes', [[1, 'note of node 1', 42]]);
  await everywhere('SELECT "select", "from" FROM "odd ""table"""', [[7, 'node 3']]);
  await waitConverged(paths, TABLES);
});

test('updates that change the primary key leave no old row anywhere', async () => {
  // Integer key, through the shell; composite key, WITHOUT ROWID key and rowid through better-sqlite3.
  sqlite3Shell(paths[1]!, 'UPDATE users SET id = 100 WHERE id = 1;');
  app1.prepare("UPDATE pairs SET b = 30 WHERE a = 'x' AND b = 3").run();
  app3.prepare("UPDATE kv SET k = 'deux' WHERE k = 'two'").run();
  app3.prepare('UPDATE notes SET rowid = 50 WHERE rowid = 1').run();
  app1.prepare('UPDATE "odd ""table""" SET "select" = 8 WHERE "select" = 7').run();

  await everywhere('SELECT id, name, email FROM users ORDER BY id', [
    [2, 'robert', 'bob@two'],
    [3, 'cy', null],
    [100, 'ada', 'ada@shell'],
  ]);
  await everywhere('SELECT a, b, v FROM pairs ORDER BY a, b', [
    ['x', 1, 'from node 1'],
    ['x', 30, 'changed by the shell'],
  ]);
  await everywhere('SELECT k, hex(v) FROM kv ORDER BY k', [
    ['deux', '000001'],
    ['three', '74726F6973'],
  ]);
  await everywhere('SELECT rowid, body, n FROM notes', [[50, 'note of node 1', 42]]);
  await everywhere('SELECT "select", "from" FROM "odd ""table"""', [[8, 'node 3']]);
  // A key changed back and forth in one transaction, and onto a key that was just freed.
  app3.transaction(() => {
    app3.prepare('UPDATE users SET id = 200 WHERE id = 2').run();
    app3.prepare('UPDATE users SET id = 2 WHERE id = 200').run();
    app3.prepare('UPDATE users SET id = 4 WHERE id = 3').run();
    app3.prepare('UPDATE users SET id = 3 WHERE id = 100').run();
  })();
  await everywhere('SELECT id, name FROM users ORDER BY id', [
    [2, 'robert'],
    [3, 'ada'],
    [4, 'cy'],
  ]);
  await waitConverged(paths, TABLES);
});

test('deletes on each node reach every node', async () => {
  app1.prepare('DELETE FROM users WHERE id = 2').run();
  sqlite3Shell(paths[1]!, `DELETE FROM kv WHERE k = 'three'; DELETE FROM notes;`);
  app3.prepare("DELETE FROM pairs WHERE a = 'x' AND b = 1").run();
  app3.prepare('DELETE FROM "odd ""table"""').run();

  await everywhere('SELECT id FROM users ORDER BY id', [[3], [4]]);
  await everywhere('SELECT k FROM kv', [['deux']]);
  await everywhere('SELECT count(*) FROM notes', [[0]]);
  await everywhere('SELECT a, b FROM pairs', [['x', 30]]);
  await everywhere('SELECT count(*) FROM "odd ""table"""', [[0]]);
  await waitConverged(paths, TABLES);
  for (const n of nodes) {
    assert.ok(
      n.node.status().shards.every((s) => s.state.type === 'running'),
      JSON.stringify(n.node.status()),
    );
    assert.equal(
      (await n.node.metrics.deadLetters.get()).values.reduce((s, v) => s + v.value, 0),
      0,
    );
  }
});
