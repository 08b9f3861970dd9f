/**
 * Keys that compare loosely replicate exactly (invariant 10), with real
 * nats-server and two nodes at shards 2: a NULL in a primary key (SQLite allows
 * it outside INTEGER PRIMARY KEY), and a `COLLATE NOCASE` key changed only in case.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { startNode, waitConverged, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { closeAll, query, sqlite3Shell } from './converge-helpers.ts';

const SCHEMA = `
  CREATE TABLE notes (k TEXT PRIMARY KEY, v TEXT);
  CREATE TABLE pairs (a TEXT, b INTEGER, v TEXT, PRIMARY KEY (a, b));
  CREATE TABLE users (name TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER);
  CREATE TABLE tags (name TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER) WITHOUT ROWID;
`;

describe('keys that compare loosely', () => {
  const dir = tempDir('hl-converge-keys-');
  let nats: TestNatsServer | undefined;
  const nodes: TestNode[] = [];
  before(async () => {
    nats = await startNatsServer();
    for (const nodeId of [1, 2])
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
  });
  after(() => closeAll(nodes, () => nats?.close(), dir.remove));
  const paths = () => nodes.map((n) => n.dbPath);

  test('a NULL key: updates change the one row, a delete removes it, on every node', async () => {
    sqlite3Shell(
      nodes[0]!.dbPath,
      "INSERT INTO notes VALUES (NULL, 'v1'), ('x', 'x1'); INSERT INTO pairs VALUES (NULL, 1, 'p1');",
    );
    sqlite3Shell(
      nodes[0]!.dbPath,
      "UPDATE notes SET v = 'v2' WHERE k IS NULL; UPDATE pairs SET v = 'p2' WHERE a IS NULL;",
    );
    sqlite3Shell(nodes[0]!.dbPath, "UPDATE notes SET v = 'v3' WHERE k IS NULL;");
    await waitConverged(paths(), ['notes', 'pairs']);
    assert.deepEqual(query(nodes[1]!.dbPath, 'SELECT k, v FROM notes ORDER BY k'), [
      [null, 'v3'],
      ['x', 'x1'],
    ]);
    assert.deepEqual(query(nodes[1]!.dbPath, 'SELECT a, b, v FROM pairs'), [[null, 1n, 'p2']]);
    sqlite3Shell(nodes[0]!.dbPath, 'DELETE FROM notes WHERE k IS NULL; DELETE FROM pairs WHERE a IS NULL;');
    await waitConverged(paths(), ['notes', 'pairs']);
    assert.deepEqual(query(nodes[1]!.dbPath, 'SELECT k FROM notes'), [['x']]);
    assert.deepEqual(query(nodes[1]!.dbPath, 'SELECT count(*) FROM pairs'), [[0n]]);
  });

  test('a NOCASE key changed only in case arrives as written (rowid and WITHOUT ROWID tables)', async () => {
    sqlite3Shell(
      nodes[0]!.dbPath,
      "INSERT INTO users VALUES ('alice', 1); INSERT INTO tags VALUES ('red', 1);",
    );
    await waitConverged(paths(), ['users', 'tags']);
    sqlite3Shell(
      nodes[0]!.dbPath,
      "UPDATE users SET name = 'Alice' WHERE name = 'alice'; UPDATE tags SET name = 'RED', n = 2 WHERE name = 'red';",
    );
    await waitConverged(paths(), ['users', 'tags']);
    for (const p of paths()) {
      assert.deepEqual(query(p, 'SELECT name, n FROM users'), [['Alice', 1n]]);
      assert.deepEqual(query(p, 'SELECT name, n FROM tags'), [['RED', 2n]]);
    }
    // The other node writes the same row under another spelling: still one row everywhere.
    sqlite3Shell(nodes[1]!.dbPath, "UPDATE users SET n = 5 WHERE name = 'ALICE';");
    await waitConverged(paths(), ['users']);
    assert.deepEqual(query(nodes[0]!.dbPath, 'SELECT name, n FROM users'), [['Alice', 5n]]);
  });
});
