/**
 * Replicated migrations (`-migrate`) end to end: three in-process nodes at
 * shards 2 on a real nats-server, the CLI publishing the files. A migration
 * applies on every node while all of them write; a node down during a
 * migration applies it at start, before it replays data; the same file again
 * is a no-op; a migration failing on one node is reported (log, metric,
 * health, -status) and holds only that node's migration stream until it is
 * fixed by hand or marked resolved; DROP COLUMN works without -cleanup.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import {
  spawnCli,
  startNode,
  waitConverged,
  writeConfigFile,
  type TestNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query, sqlite3Shell } from './converge-helpers.ts';

const SCHEMA = 'CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER);';

describe('replicated migrations', () => {
  const dir = tempDir('hl-migrate-');
  let nats: TestNatsServer | undefined;
  const nodes: (TestNode | undefined)[] = [];
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
  const live = () => nodes.filter((n): n is TestNode => n !== undefined);
  const paths = () => live().map((n) => n.dbPath);

  /** Runs `-migrate` with node 1's config; returns exit code and output. */
  const migrate = async (file: string, sql: string, args: string[] = []) => {
    const path = join(dir.path, file);
    writeFileSync(path, sql);
    const config = writeConfigFile(live()[0]!.config, join(dir.path, 'node-1.toml'));
    const cli = spawnCli(['-config', config, '-migrate', path, ...args]);
    const code = await cli.exited;
    return { code, text: cli.output.join('\n') };
  };
  const status = (n: TestNode, seq: number) =>
    (query<[string]>(n.dbPath, 'SELECT status FROM __harmonylite___migrations WHERE seq = ?', seq)[0] ??
      [])[0];
  const waitApplied = (seq: number, on = live()) =>
    waitFor(
      `migration ${seq} applied on nodes ${on.map((n) => n.node.nodeId).join(', ')}`,
      () => on.every((n) => status(n, seq) === 'applied'),
      { timeoutMs: 30_000, seen: () => on.map((n) => status(n, seq)) },
    );
  const columns = (n: TestNode, table: string) =>
    query<[string]>(n.dbPath, `SELECT name FROM pragma_table_info('${table}') ORDER BY cid`).map((r) => r[0]);

  before(async () => {
    nats = await startNatsServer();
    for (const id of [1, 2, 3]) nodes.push(await start(id, SCHEMA));
  });
  after(() => closeAll(nodes, () => nats?.close(), dir.remove));

  test('a migration applies on 3 nodes while every node writes; nothing is lost or diverges', async () => {
    // Writers on every node: inserts of their own ids, using the new column once their own schema has it.
    let stop = false;
    const written: number[] = [0, 0, 0];
    const writers = live().map(async (n, i) => {
      const db = new Database(n.dbPath, { timeout: 10_000 });
      try {
        for (let k = 0; !stop; k++) {
          const id = (i + 1) * 100_000 + k;
          const hasColor = columns(n, 'items').includes('color');
          if (hasColor)
            db.prepare('INSERT INTO items (id, name, qty, color) VALUES (?, ?, ?, ?)').run(
              id,
              `n${i}`,
              k,
              `c${k}`,
            );
          else db.prepare('INSERT INTO items (id, name, qty) VALUES (?, ?, ?)').run(id, `n${i}`, k);
          written[i]!++;
          await new Promise((r) => setTimeout(r, 5));
        }
      } finally {
        db.close();
      }
    });
    await waitFor('writes on every node', () => written.every((w) => w >= 20));
    const r = await migrate(
      '001-color.sql',
      `-- colours for items
ALTER TABLE items ADD COLUMN color TEXT NOT NULL DEFAULT 'none';
CREATE INDEX items_color ON items (color);
CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
INSERT INTO tags (id, label) VALUES (1, 'red'), (2, 'blue');
`,
    );
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, /published as migration 1 /);
    await waitApplied(1);
    const before = [...written];
    await waitFor('writes on every node after the migration', () =>
      written.every((w, i) => w >= before[i]! + 20),
    );
    stop = true;
    await Promise.all(writers);
    await waitConverged(paths(), ['items', 'tags']);
    for (const n of live()) {
      assert.deepEqual(columns(n, 'items'), ['id', 'name', 'qty', 'color']);
      assert.ok(
        query(n.dbPath, "SELECT 1 FROM sqlite_schema WHERE type = 'index' AND name = 'items_color'").length >
          0,
      );
      assert.ok(n.logs.has('migration applied'));
      for (const s of n.node.status().shards) assert.equal(s.state.type, 'running', `node ${n.node.nodeId}`);
      assert.equal((await n.node.metrics.migrationsApplied.get()).values[0]?.value, 1);
    }
    const total = written.reduce((a, b) => a + b, 0);
    assert.equal(Number(query<[bigint]>(paths()[0]!, 'SELECT count(*) FROM items')[0]![0]), total);
    // Rows written with the new column on one node carry it everywhere.
    assert.ok(
      Number(query<[bigint]>(paths()[2]!, "SELECT count(*) FROM items WHERE color LIKE 'c%'")[0]![0]) > 0,
    );
    // The migration's own data statements ran on every node and were not published by any:
    // nothing logged for the rows it inserted, and no competing versions (no conflicts).
    for (const p of paths()) {
      assert.equal(
        Number(query<[bigint]>(p, 'SELECT count(*) FROM __harmonylite__tags_change_log')[0]![0]),
        0,
      );
      assert.equal(Number(query<[bigint]>(p, 'SELECT count(*) FROM __harmonylite___conflicts')[0]![0]), 0);
    }
  });

  test('the same file again is a no-op', async () => {
    const r = await migrate(
      '001-color-again.sql',
      `-- colours for items
ALTER TABLE items ADD COLUMN color TEXT NOT NULL DEFAULT 'none';
CREATE INDEX items_color ON items (color);
CREATE TABLE tags (id INTEGER PRIMARY KEY, label TEXT NOT NULL);
INSERT INTO tags (id, label) VALUES (1, 'red'), (2, 'blue');
`,
    );
    assert.equal(r.code, 0, r.text);
    assert.match(r.text, /already published as migration 1 \(001-color\.sql, same content\): nothing to do/);
    for (const n of live()) assert.equal(n.node.status().migrations?.position, 1);
  });

  test('a node down during a migration applies it at start, before replaying data', async () => {
    const down = nodes[2]!;
    await down.close();
    nodes[2] = undefined;
    const r = await migrate('002-notes.sql', 'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);');
    assert.equal(r.code, 0, r.text);
    await waitApplied(2);
    // Data needing the new schema is published while node 3 is down.
    sqlite3Shell(paths()[0]!, "INSERT INTO notes VALUES (1, 'while node 3 was down');");
    sqlite3Shell(paths()[1]!, "INSERT INTO items (id, name, qty, color) VALUES (1, 'after', 1, 'green');");
    await waitConverged(paths(), ['items', 'notes']);
    nodes[2] = await start(3);
    const logs = nodes[2].logs.messages();
    const applied = logs.indexOf('migration applied');
    assert.ok(applied >= 0, 'node 3 applied the migration it missed');
    assert.ok(applied < logs.indexOf('HarmonyLite node started'), 'before its shard consumers started');
    await waitConverged(paths(), ['items', 'notes', 'tags']);
    assert.equal(nodes[2].node.status().migrations?.position, 2);
    assert.ok(!nodes[2].logs.has(/waiting for/i), 'no shard waited for the schema');
  });

  test('a migration failing on one node is reported and held there, then fixed by hand or resolved', async () => {
    const [a, , c] = live() as [TestNode, TestNode, TestNode];
    // Node 3 has a view where the migration creates a table: the statement fails there only.
    sqlite3Shell(c.dbPath, 'CREATE VIEW totals AS SELECT count(*) AS n FROM items;');
    const r = await migrate(
      '003-totals.sql',
      'CREATE TABLE totals (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);\nINSERT INTO totals VALUES (1, 0);',
    );
    assert.equal(r.code, 0, r.text);
    await waitApplied(3, live().slice(0, 2));
    await waitFor('node 3 holding migration 3', () => c.node.status().migrations?.held?.seq === 3);
    const held = c.node.status().migrations!.held!;
    assert.match(held.statement ?? '', /line 1: CREATE TABLE totals/);
    assert.match(held.error, /already exists/);
    const line = c.logs.records.find(
      (l) => l.msg === 'migration failed on this node: the migration stream is held',
    );
    assert.ok(line, 'an error line');
    assert.equal(line.node, 3);
    assert.equal(line.migration, 3);
    assert.match(String(line.statement), /CREATE TABLE totals/);
    assert.equal((await c.node.metrics.migrationHeld.get()).values[0]?.value, 1);
    assert.ok((await c.node.metrics.migrationFailures.get()).values[0]!.value >= 1);
    const health = c.node.observability!.health.evaluate();
    assert.equal(health.status, 'degraded');
    assert.ok(health.failed.some((f) => /migration 3 .*holds the migration stream/.test(f.reason)));
    assert.equal(status(c, 3), 'failed');
    // -status on node 3 shows it with its statement and error.
    const st = spawnCli(['-config', writeConfigFile(c.config, join(dir.path, 'node-3.toml')), '-status']);
    await st.exited;
    assert.match(st.output.join('\n'), /3 +003-totals\.sql +failed .*CREATE TABLE totals.*already exists/);

    // Other tables keep replicating to node 3; the new table's rows wait there for its schema.
    sqlite3Shell(a.dbPath, "INSERT INTO notes VALUES (2, 'during the hold');");
    await waitConverged(paths(), ['notes']);
    sqlite3Shell(a.dbPath, 'UPDATE totals SET n = 5;');

    // Fixed by hand on node 3: the retry applies it, and the held rows follow.
    sqlite3Shell(c.dbPath, 'DROP VIEW totals;');
    await waitApplied(3);
    await waitFor('node 3 no longer held', () => c.node.status().migrations?.held === undefined);
    assert.equal((await c.node.metrics.migrationHeld.get()).values[0]?.value, 0);
    await waitConverged(paths(), ['items', 'notes', 'tags', 'totals']);

    // A second failure, this time done by hand and marked resolved with -migrate-resolved.
    sqlite3Shell(c.dbPath, 'CREATE VIEW audit AS SELECT 1;');
    const r2 = await migrate('004-audit.sql', 'CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);');
    assert.equal(r2.code, 0, r2.text);
    await waitFor('node 3 holding migration 4', () => c.node.status().migrations?.held?.seq === 4);
    sqlite3Shell(c.dbPath, 'DROP VIEW audit; CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT);');
    const resolve = spawnCli(['-config', join(dir.path, 'node-3.toml'), '-migrate-resolved', '4']);
    assert.equal(await resolve.exited, 0, resolve.output.join('\n'));
    assert.match(resolve.output.join('\n'), /migration 4 \(004-audit\.sql\) marked resolved on this node/);
    await waitFor('node 3 going on after the resolve', () => c.node.status().migrations?.position === 4);
    assert.equal(c.node.status().migrations?.held, undefined);
    sqlite3Shell(a.dbPath, "INSERT INTO audit VALUES (1, 'after the fix');");
    await waitConverged(paths(), ['audit', 'totals']);
  });

  test('an error in the SQL is reported by -migrate before anything is published', async () => {
    const r = await migrate(
      '005-bad.sql',
      'ALTER TABLE items ADD COLUMN size INTEGER;\nALTER TABLE nope ADD x;',
    );
    assert.equal(r.code, 1, r.text);
    assert.match(
      r.text,
      /fails on this node's database .*line 2: ALTER TABLE nope ADD x: no such table: nope/,
    );
    assert.match(r.text, /nothing was published/);
    for (const n of live()) assert.ok(!columns(n, 'items').includes('size'), 'rolled back');
    const refused = await migrate(
      '006-txn.sql',
      'BEGIN;\nALTER TABLE items ADD COLUMN size INTEGER;\nCOMMIT;',
    );
    assert.equal(refused.code, 2, refused.text);
    assert.match(refused.text, /line 1: transaction control/);
  });

  test('DROP COLUMN through -migrate: capture adapts in the same transaction, no -cleanup', async () => {
    const [a, b, c] = live() as [TestNode, TestNode, TestNode];
    sqlite3Shell(a.dbPath, "INSERT INTO items (id, name, qty, color) VALUES (900, 'before drop', 7, 'x');");
    await waitConverged(paths(), ['items']);
    const r = await migrate('005-drop-qty.sql', 'ALTER TABLE items DROP COLUMN qty;');
    assert.equal(r.code, 0, r.text);
    await waitFor('migration 5 applied everywhere', () =>
      live().every((n) => status(n, 5) === 'applied' && !columns(n, 'items').includes('qty')),
    );
    sqlite3Shell(b.dbPath, "INSERT INTO items (id, name, color) VALUES (901, 'after drop', 'y');");
    sqlite3Shell(c.dbPath, "UPDATE items SET name = 'renamed' WHERE id = 900;");
    await waitConverged(paths(), ['items']);
    assert.deepEqual(columns(a, 'items'), ['id', 'name', 'color']);
    assert.equal(query<[string]>(a.dbPath, 'SELECT name FROM items WHERE id = 900')[0]![0], 'renamed');
    for (const n of live()) for (const s of n.node.status().shards) assert.equal(s.state.type, 'running');
  });
});
