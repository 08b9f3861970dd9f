/**
 * Invariant 7: any SQLite client writes to a captured table unchanged, with
 * default settings (no trusted_schema, no extension, no "unsafe use of virtual
 * table"), and every INSERT, UPDATE and DELETE lands in the global log in
 * commit order with its type and values.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { brief, captureFixture, python, sqlite3 } from './capture-fixture.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty INTEGER);';

const EXPECTED = [
  ['items', 'insert', { id: 1n, name: 'apple', qty: 3n }],
  ['items', 'insert', { id: 2n, name: 'pear', qty: 5n }],
  ['items', 'update', { id: 1n, name: 'apple', qty: 4n }],
  ['items', 'delete', { id: 2n, name: 'pear', qty: 5n }],
];

test('the stock sqlite3 shell writes to a captured table; each change is logged in commit order', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(f.path, "INSERT INTO items VALUES (1, 'apple', 3);");
  sqlite3(f.path, "INSERT INTO items VALUES (2, 'pear', 5); UPDATE items SET qty = 4 WHERE id = 1;");
  sqlite3(f.path, 'DELETE FROM items WHERE id = 2;');
  assert.deepEqual(f.scan().map(brief), EXPECTED);
});

test('better-sqlite3 with default settings writes to a captured table; each change is logged', () => {
  using f = captureFixture(SCHEMA);
  const app = new Database(f.path);
  try {
    app.prepare("INSERT INTO items VALUES (1, 'apple', 3)").run();
    app.transaction(() => {
      app.prepare("INSERT INTO items VALUES (2, 'pear', 5)").run();
      app.prepare('UPDATE items SET qty = 4 WHERE id = 1').run();
    })();
    app.prepare('DELETE FROM items WHERE id = 2').run();
  } finally {
    app.close();
  }
  assert.deepEqual(f.scan().map(brief), EXPECTED);
});

test("Python's sqlite3 with default settings writes to a captured table; each change is logged", () => {
  using f = captureFixture(SCHEMA);
  python(f.path, [
    ["INSERT INTO items VALUES (1, 'apple', 3)"],
    ["INSERT INTO items VALUES (2, 'pear', 5)", 'UPDATE items SET qty = 4 WHERE id = 1'],
    ['DELETE FROM items WHERE id = 2'],
  ]);
  assert.deepEqual(f.scan().map(brief), EXPECTED);
});

test('writes of three clients interleave in the global log in commit order', () => {
  using f = captureFixture(SCHEMA + 'CREATE TABLE notes (k TEXT PRIMARY KEY, body TEXT);');
  const app = new Database(f.path);
  try {
    sqlite3(f.path, "INSERT INTO items VALUES (1, 'apple', 3); INSERT INTO notes VALUES ('a', 'shell');");
    app.prepare("INSERT INTO notes VALUES ('b', 'better-sqlite3')").run();
    python(f.path, [['UPDATE items SET qty = 9 WHERE id = 1', "DELETE FROM notes WHERE k = 'a'"]]);
    app.prepare("UPDATE notes SET body = 'again' WHERE k = 'b'").run();
    sqlite3(f.path, 'DELETE FROM items;');
  } finally {
    app.close();
  }
  assert.deepEqual(f.scan().map(brief), [
    ['items', 'insert', { id: 1n, name: 'apple', qty: 3n }],
    ['notes', 'insert', { k: 'a', body: 'shell' }],
    ['notes', 'insert', { k: 'b', body: 'better-sqlite3' }],
    ['items', 'update', { id: 1n, name: 'apple', qty: 9n }],
    ['notes', 'delete', { k: 'a', body: 'shell' }],
    ['notes', 'update', { k: 'b', body: 'again' }],
    ['items', 'delete', { id: 1n, name: 'apple', qty: 9n }],
  ]);
});

test('capture needs no trusted_schema: every client writes with PRAGMA trusted_schema = OFF', () => {
  using f = captureFixture(SCHEMA);
  sqlite3(f.path, "PRAGMA trusted_schema = OFF; INSERT INTO items VALUES (1, 'shell', 1);");
  python(f.path, [['PRAGMA trusted_schema = OFF', "INSERT INTO items VALUES (2, 'python', 2)"]]);
  const app = new Database(f.path);
  try {
    app.pragma('trusted_schema = OFF');
    app.prepare("INSERT INTO items VALUES (3, 'better-sqlite3', 3)").run();
    app.prepare('UPDATE items SET qty = qty + 10').run();
    app.prepare('DELETE FROM items WHERE id = 2').run();
  } finally {
    app.close();
  }
  assert.deepEqual(
    f.scan().map((c) => [c.type, c.key]),
    [
      ['insert', [1n]],
      ['insert', [2n]],
      ['insert', [3n]],
      ['update', [1n]],
      ['update', [2n]],
      ['update', [3n]],
      ['delete', [2n]],
    ],
  );
});
