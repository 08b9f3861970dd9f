/**
 * Application triggers created after capture was installed, and columns added
 * by a tool and written at once, with real nats-server and two nodes: the
 * origin and its replica end with identical rows.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { REPLAY_GUARD } from '../../src/cdc/names.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query, sqlite3Shell } from './converge-helpers.ts';

const SCHEMA =
  'CREATE TABLE posts (id INTEGER PRIMARY KEY, title TEXT, slug TEXT, touched INTEGER NOT NULL DEFAULT 0);' +
  'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);';

function sqliteUtils(args: string[], input?: string): void {
  const r = spawnSync('sqlite-utils', args, { encoding: 'utf8', ...(input === undefined ? {} : { input }) });
  assert.equal(r.status, 0, `sqlite-utils ${args.join(' ')}: ${r.stderr}`);
}

/** Our triggers on the table sit after every application trigger in sqlite_schema (they fire first). */
function captureFiresFirst(path: string, table: string): boolean {
  const [app, ours] = query(
    path,
    "SELECT max(CASE WHEN name NOT GLOB '__harmonylite__*' THEN rowid END), " +
      "min(CASE WHEN name GLOB '__harmonylite__*' THEN rowid END) FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?",
    table,
  )[0] as [bigint | null, bigint | null];
  return app !== null && ours !== null && ours > app;
}

describe('application triggers and columns added by tools', () => {
  const dir = tempDir('hl-app-triggers-');
  let nats: TestNatsServer | undefined;
  const nodes: TestNode[] = [];

  before(async () => {
    nats = await startNatsServer();
    for (const nodeId of [1, 2])
      nodes.push(await startNode({ dir: dir.path, nodeId, urls: [nats.url], schema: SCHEMA }));
  });
  after(() => closeAll(nodes, () => nats?.close(), dir.remove));

  const rows = (n: number, sql: string) => query(nodes[n]!.dbPath, sql);
  async function same(sql: string): Promise<unknown[]> {
    let seen: unknown[] = [];
    await waitFor(
      `${sql} equal on both nodes`,
      () => {
        seen = [rows(0, sql), rows(1, sql)];
        return JSON.stringify(seen[0], big) === JSON.stringify(seen[1], big) ? seen : false;
      },
      {
        timeoutMs: 30_000,
        seen: () => [
          seen,
          rows(0, 'SELECT * FROM __harmonylite__items_change_log'),
          nodes.map((n) =>
            n.logs.records
              .filter((r) => /escap|waits|caught/.test(String(r.msg)))
              .map((r) => [r.msg, r.rows]),
          ),
        ],
      },
    );
    return rows(0, sql);
  }

  test('slug and touch-counter triggers added after capture: origin and replica equal', async () => {
    // The application's triggers, on every node. The counter skips replayed writes (the replay
    // guard): the origin's increments arrive as changes of their own.
    const appTriggers =
      "CREATE TRIGGER posts_slug AFTER INSERT ON posts BEGIN UPDATE posts SET slug = lower(replace(NEW.title, ' ', '-')) WHERE id = NEW.id; END;" +
      `CREATE TRIGGER posts_touch AFTER UPDATE OF title ON posts WHEN NOT EXISTS (SELECT 1 FROM ${REPLAY_GUARD}) ` +
      'BEGIN UPDATE posts SET touched = touched + 1 WHERE id = NEW.id; END;';
    for (const n of nodes) sqlite3Shell(n.dbPath, appTriggers);
    for (const n of nodes)
      await waitFor('capture triggers to fire first again', () => captureFiresFirst(n.dbPath, 'posts'));
    sqlite3Shell(nodes[0]!.dbPath, "INSERT INTO posts (id, title) VALUES (1, 'Hello World');");
    sqlite3Shell(nodes[0]!.dbPath, "UPDATE posts SET title = 'Hello Again' WHERE id = 1;");
    sqlite3Shell(nodes[1]!.dbPath, "INSERT INTO posts (id, title) VALUES (2, 'Second Post');");
    await waitFor('post 2 on node 1', () => rows(0, 'SELECT count(*) FROM posts WHERE id = 2')[0]![0] === 1n);
    sqlite3Shell(nodes[1]!.dbPath, "UPDATE posts SET title = 'Second Edit' WHERE id = 2;");
    const all = await same('SELECT id, title, slug, touched FROM posts ORDER BY id');
    assert.deepEqual(all, [
      [1n, 'Hello Again', 'hello-world', 1n],
      [2n, 'Second Edit', 'second-post', 1n],
    ]);
  });

  test('sqlite-utils add-column then insert, and insert --alter: replicas get the new columns', async () => {
    const db = nodes[0]!.dbPath;
    const expected: unknown[][] = [];
    // Rounds: each write races the re-install its column triggers.
    for (let round = 1; round <= 3; round++) {
      const color = `color${round}`;
      const size = `size${round}`;
      sqliteUtils(['add-column', db, 'items', color, 'text']);
      sqliteUtils(
        ['insert', db, 'items', '-', '--pk', 'id'],
        `[{"id": ${round * 10}, "name": "a", "${color}": "red"}]`,
      );
      sqliteUtils(
        ['insert', db, 'items', '-', '--pk', 'id', '--alter'],
        `[{"id": ${round * 10 + 1}, "name": "b", "${color}": "blue", "${size}": ${round}}]`,
      );
      // The replica adds the columns by hand as well (a schema change is made on every node).
      sqlite3Shell(
        nodes[1]!.dbPath,
        `ALTER TABLE items ADD COLUMN ${color} TEXT; ALTER TABLE items ADD COLUMN ${size} INTEGER;`,
      );
      const all = await same(
        `SELECT id, name, ${color}, ${size} FROM items WHERE id >= ${round * 10} ORDER BY id`,
      );
      expected.push(
        [BigInt(round * 10), 'a', 'red', null],
        [BigInt(round * 10 + 1), 'b', 'blue', BigInt(round)],
      );
      assert.deepEqual(all, expected.slice(-2));
    }
  });
});

function big(_k: string, v: unknown): unknown {
  return typeof v === 'bigint' ? `${v}n` : v;
}
