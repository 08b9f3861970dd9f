/**
 * Migration tools' bookkeeping stays per node (DDL is not replicated, so every
 * node runs its own migrations): knex's `migrate:latest` (its better-sqlite3
 * client) on two replicating nodes. With knex_migrations replicated, node 2
 * took node 1's new migration as done, never created its table, and the rows
 * of that table held the shard for good.
 */
import assert from 'node:assert/strict';
import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import knex from 'knex';
import { startNatsServer } from '../helpers/nats-server.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';

const CREATE_TABLE = (table: string): string => `
exports.up = (knex) => knex.schema.createTable('${table}', (t) => { t.increments('id'); t.string('name'); });
exports.down = (knex) => knex.schema.dropTable('${table}');
`;

async function migrateLatest(db: string, directory: string): Promise<void> {
  const k = knex({
    client: 'better-sqlite3',
    connection: { filename: db },
    useNullAsDefault: true,
    migrations: { directory, loadExtensions: ['.cjs'] },
  });
  try {
    await k.migrate.latest();
  } finally {
    await k.destroy();
  }
}

function query<T>(db: string, sql: string): T[] {
  const c = new Database(db, { readonly: true });
  try {
    return c.prepare(sql).all() as T[];
  } finally {
    c.close();
  }
}

function insert(db: string, table: string, name: string): void {
  const c = new Database(db);
  c.prepare(`INSERT INTO ${table} (name) VALUES (?)`).run(name);
  c.close();
}

const names = (db: string, table: string): string[] =>
  query<{ name: string }>(db, `SELECT name FROM ${table}`).map((r) => r.name);

test('knex migrate:latest on two nodes: each runs every migration itself, data replicates', async () => {
  using dir = tempDir();
  const migrations = join(dir.path, 'migrations');
  mkdirSync(migrations);
  writeFileSync(join(migrations, '20240101000000_items.cjs'), CREATE_TABLE('items'));
  await using server = await startNatsServer();
  const nodes: TestNode[] = [];
  try {
    for (const nodeId of [1, 2]) {
      nodes.push(
        await startNode({
          dir: dir.path,
          nodeId,
          urls: [server.url],
          schema: 'CREATE TABLE seed (id INTEGER PRIMARY KEY, name TEXT)',
          configure: (c) => (c.snapshot.enabled = false),
        }),
      );
    }
    const [one, two] = nodes as [TestNode, TestNode];
    await migrateLatest(one.dbPath, migrations);
    await migrateLatest(two.dbPath, migrations);
    insert(one.dbPath, 'items', 'item from node 1');
    await waitFor('the item on node 2', () => names(two.dbPath, 'items').includes('item from node 1'));

    // A new migration, run on node 1 first (a rolling upgrade); node 2 runs it later.
    writeFileSync(join(migrations, '20240102000000_tags.cjs'), CREATE_TABLE('tags'));
    await migrateLatest(one.dbPath, migrations);
    insert(one.dbPath, 'seed', 'marker');
    // One shard: everything node 1 wrote before the marker has been applied on node 2.
    await waitFor('the marker on node 2', () => names(two.dbPath, 'seed').includes('marker'));
    await migrateLatest(two.dbPath, migrations);
    insert(one.dbPath, 'tags', 'tag from node 1');
    await waitFor('the tag on node 2 (its own migration created the table)', () =>
      names(two.dbPath, 'tags').includes('tag from node 1'),
    );
    for (const n of nodes) {
      assert.deepEqual(
        query<{ name: string }>(n.dbPath, 'SELECT name FROM knex_migrations ORDER BY id').map((r) => r.name),
        ['20240101000000_items.cjs', '20240102000000_tags.cjs'],
        `${n.dbPath}: its own bookkeeping`,
      );
      assert.deepEqual(query(n.dbPath, 'SELECT is_locked FROM knex_migrations_lock'), [{ is_locked: 0 }]);
    }
    assert.ok(
      one.logs.records.some(
        (r) =>
          r.msg === 'migration bookkeeping table not replicated (migration_tables)' &&
          r.table === 'knex_migrations_lock',
      ),
      'the node says which tables it leaves out',
    );
  } finally {
    for (const n of nodes) await n.close();
  }
});
