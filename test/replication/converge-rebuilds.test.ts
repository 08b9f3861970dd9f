/**
 * Invariant 9 end to end, with real nats-server and two nodes at shards 2 (no
 * shard_by_table): writes that escape capture (a table rebuilt the way
 * migration tools do it, writes made while capture was removed) still
 * replicate, and a rolling migration's backfill never overwrites a newer write.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import {
  CLI_ENTRY,
  REPO_ROOT,
  startNode,
  waitConverged,
  writeConfigFile,
  type TestNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query, sqlite3Shell } from './converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);';

describe('writes that escape capture, and rolling migrations', () => {
  const dir = tempDir('hl-rebuilds-');
  let nats: TestNatsServer | undefined;
  const nodes: TestNode[] = [];
  const start = (nodeId: number, schema?: string) =>
    startNode({
      dir: dir.path,
      nodeId,
      urls: [nats!.url],
      ...(schema === undefined ? {} : { schema }),
      configure: (c) => {
        c.replication_log.shards = 2;
      },
    });

  before(async () => {
    nats = await startNatsServer();
    nodes.push(await start(1, SCHEMA), await start(2, SCHEMA));
  });
  after(() => closeAll(nodes, () => nats?.close(), dir.remove));

  const paths = () => nodes.map((n) => n.dbPath);

  test('a table rebuilt in one transaction (create, copy, drop, rename) and written at once: every row replicates', async () => {
    sqlite3Shell(nodes[0]!.dbPath, "INSERT INTO items VALUES (1, 'one', 1), (2, 'two', 2);");
    await waitConverged(paths(), ['items']);
    // The same rebuild on both nodes (the migration), each followed at once by writes from the shell.
    const rebuild = (extra: string) =>
      'BEGIN; CREATE TABLE items_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);' +
      'INSERT INTO items_new SELECT * FROM items; DROP TABLE items; ALTER TABLE items_new RENAME TO items; COMMIT;' +
      extra;
    sqlite3Shell(
      nodes[0]!.dbPath,
      rebuild("INSERT INTO items VALUES (3, 'three', 3); UPDATE items SET qty = 10 WHERE id = 1;"),
    );
    sqlite3Shell(
      nodes[1]!.dbPath,
      rebuild("INSERT INTO items VALUES (4, 'four', 4); DELETE FROM items WHERE id = 2;"),
    );
    await waitConverged(paths(), ['items']);
    assert.deepEqual(query(nodes[0]!.dbPath, 'SELECT id, name, qty FROM items ORDER BY id'), [
      [1n, 'one', 10n],
      [3n, 'three', 3n],
      [4n, 'four', 4n],
    ]);
  });

  test('sqlite-utils transform, then an insert at once: the rows replicate', async () => {
    const utils = (...args: string[]) => {
      const r = spawnSync('sqlite-utils', args, {
        encoding: 'utf8',
        input: args.includes('-') ? '[{"id": 5, "name": "five", "qty": 5}]' : undefined,
      });
      assert.equal(r.status, 0, `sqlite-utils ${args.join(' ')}: ${r.stderr}`);
    };
    utils('transform', nodes[1]!.dbPath, 'items', '--column-order', 'id');
    utils('insert', nodes[1]!.dbPath, 'items', '-', '--pk', 'id');
    sqlite3Shell(nodes[1]!.dbPath, 'UPDATE items SET qty = 11 WHERE id = 1;');
    utils('transform', nodes[0]!.dbPath, 'items', '--column-order', 'id');
    await waitConverged(paths(), ['items']);
    assert.deepEqual(query(nodes[0]!.dbPath, 'SELECT id, qty FROM items WHERE id IN (1, 5) ORDER BY id'), [
      [1n, 11n],
      [5n, 5n],
    ]);
  });

  test('writes made while capture was removed (-cleanup, node stopped) replicate at the next start', async () => {
    const stopped = nodes.splice(0, 1)[0]!;
    await stopped.close();
    const file = writeConfigFile(stopped.config, `${dir.path}/node-1.toml`);
    const r = spawnSync(process.execPath, ['--import', 'tsx', CLI_ENTRY, '-config', file, '-cleanup'], {
      cwd: REPO_ROOT,
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.equal(r.status, 0, r.stderr);
    sqlite3Shell(
      stopped.dbPath,
      "INSERT INTO items VALUES (6, 'while stopped', 6); UPDATE items SET name = 'renamed' WHERE id = 3; DELETE FROM items WHERE id = 4;",
    );
    nodes.unshift(await start(1));
    await waitConverged(paths(), ['items']);
    assert.deepEqual(
      query(nodes[1]!.dbPath, 'SELECT id, name FROM items WHERE id IN (3, 4, 6) ORDER BY id'),
      [
        [3n, 'renamed'],
        [6n, 'while stopped'],
      ],
    );
    assert.ok(nodes[0]!.logs.has(/found writes made while capture was absent/u));
  });

  test("a rolling migration: the second node's backfill of the default row never overwrites the newer update", async () => {
    const migration =
      "CREATE TABLE settings (k TEXT PRIMARY KEY, v TEXT); INSERT INTO settings VALUES ('theme', 'default');";
    sqlite3Shell(nodes[0]!.dbPath, migration);
    await waitFor('node 1 captures settings', () => nodes[0]!.node.tables.includes('settings'));
    sqlite3Shell(nodes[0]!.dbPath, "UPDATE settings SET v = 'custom' WHERE k = 'theme';");
    // Node 2 holds those changes until it has the table: it migrates a little later.
    await waitFor('node 2 holds a shard for the missing table', () =>
      nodes[1]!.node.status().shards.some((s) => s.state.type === 'waiting-for-schema'),
    );
    sqlite3Shell(nodes[1]!.dbPath, migration);
    await waitConverged(paths(), ['settings']);
    for (const p of paths()) assert.deepEqual(query(p, 'SELECT k, v FROM settings'), [['theme', 'custom']]);
  });
});
