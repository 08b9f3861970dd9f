/**
 * `-migrate` on the embedded default (no `[nats] urls`), with CLI nodes: on a
 * stopped node it starts the node's own server for the command, publishes,
 * and the node applies the migration at its next start (before replaying);
 * on a running node it uses the node's server and the node applies it at
 * once. `-status` lists the migrations this node applied.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createDatabase,
  nodeConfig,
  spawnCli,
  writeConfigFile,
  type CliNode,
} from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { query, sqlite3Shell } from '../replication/converge-helpers.ts';

async function run(args: string[]): Promise<{ code: number | null; text: string }> {
  const cli = spawnCli(args);
  const code = await cli.exited;
  return { code, text: cli.output.join('\n') };
}

async function startedNode(config: string): Promise<CliNode> {
  const cli = spawnCli(['-config', config]);
  // Generous: a loaded machine took over 30 s to start the embedded server.
  await cli.waitForOutput(/HarmonyLite node started/, 90_000);
  return cli;
}

describe('-migrate on the embedded default', () => {
  it('works on a stopped node (applied at its next start) and on a running one', async () => {
    using dir = tempDir();
    const c = nodeConfig({ dir: dir.path, nodeId: 1, urls: [] });
    createDatabase(
      c.db_path,
      'CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL, draft INTEGER)',
    );
    const config = writeConfigFile(c, join(dir.path, 'node-1.toml'));
    const columns = () =>
      query<[string]>(c.db_path, "SELECT name FROM pragma_table_info('notes') ORDER BY cid").map((r) => r[0]);

    // First start creates capture and the migration record; then the node stops.
    let node = await startedNode(config);
    sqlite3Shell(c.db_path, "INSERT INTO notes VALUES (1, 'one', 1);");
    node.kill('SIGINT');
    assert.equal(await node.exited, 0);

    const first = join(dir.path, '001-tags.sql');
    writeFileSync(first, "ALTER TABLE notes ADD COLUMN tag TEXT;\nUPDATE notes SET tag = 'old';\n");
    const stopped = await run(['-config', config, '-migrate', first]);
    assert.equal(stopped.code, 0, stopped.text);
    assert.match(stopped.text, /the node is not running: started its embedded nats-server/);
    assert.match(stopped.text, /001-tags\.sql: published as migration 1 /);
    assert.deepEqual(columns(), ['id', 'body', 'draft'], 'nothing applied by the command itself');

    node = await startedNode(config);
    try {
      assert.ok(
        node.output.findIndex((l) => l.includes('migration applied')) <
          node.output.findIndex((l) => l.includes('HarmonyLite node started')),
        'applied during the start',
      );
      assert.deepEqual(columns(), ['id', 'body', 'draft', 'tag']);
      assert.equal(query<[string]>(c.db_path, 'SELECT tag FROM notes WHERE id = 1')[0]![0], 'old');

      // On the running node: its server is used, and the node drops the column at once (no -cleanup).
      const second = join(dir.path, '002-drop-draft.sql');
      writeFileSync(second, 'ALTER TABLE notes DROP COLUMN draft;');
      const running = await run(['-config', config, '-migrate', second]);
      assert.equal(running.code, 0, running.text);
      assert.doesNotMatch(running.text, /started its embedded nats-server/);
      assert.match(running.text, /published as migration 2 /);
      await waitFor('the running node to drop the column', () => !columns().includes('draft'));
      sqlite3Shell(c.db_path, "INSERT INTO notes (id, body, tag) VALUES (2, 'two', 'new');");

      const again = await run(['-config', config, '-migrate', second]);
      assert.equal(again.code, 0, again.text);
      assert.match(again.text, /already published as migration 2 .*nothing to do/);

      const status = await run(['-config', config, '-status']);
      assert.equal(status.code, 0, status.text);
      assert.match(status.text, /migrations: 2 applied/);
      assert.match(status.text, /^ {2}1 +001-tags\.sql +applied/m);
      assert.match(status.text, /^ {2}2 +002-drop-draft\.sql +applied/m);
      assert.match(status.text, /NODE +MIGRATION +HELD/);
      node.kill('SIGINT');
      assert.equal(await node.exited, 0);
    } finally {
      if (node.child.exitCode === null) node.kill('SIGKILL');
    }
  });
});
