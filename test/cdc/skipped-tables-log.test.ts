/**
 * A node reports each skipped table (an FTS5 table and its shadow tables) once,
 * not again at every schema re-check.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { startNatsServer } from '../helpers/nats-server.ts';
import { startNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';

test('"table skipped" is logged once per table, however many schema changes follow', async () => {
  using dir = tempDir();
  await using server = await startNatsServer();
  const node = await startNode({
    dir: dir.path,
    nodeId: 1,
    urls: [server.url],
    schema:
      'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE VIRTUAL TABLE notes_fts USING fts5(body);',
  });
  try {
    const skipped = () =>
      node.logs.records.filter((r) => r.msg === 'table skipped').map((r) => String(r.table));
    const first = skipped();
    assert.ok(first.includes('notes_fts'), `the FTS table is reported: ${JSON.stringify(first)}`);
    assert.equal(new Set(first).size, first.length, `each once: ${JSON.stringify(first)}`);
    for (let i = 1; i <= 3; i++) {
      const db = new Database(node.dbPath);
      db.exec(`CREATE TABLE extra_${i} (id INTEGER PRIMARY KEY)`);
      db.close();
      await waitFor(`capture of extra_${i}`, () =>
        node.logs.records.some(
          (r) =>
            r.msg === 'capture brought up to date after a schema change' &&
            JSON.stringify(r.tables).includes(`extra_${i}`),
        ),
      );
    }
    assert.deepEqual(skipped(), first, 'no table reported again after three schema changes');
  } finally {
    await node.close();
  }
});
