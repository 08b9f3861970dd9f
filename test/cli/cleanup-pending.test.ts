/**
 * `-cleanup` refuses while changes are not yet published, saying how many and
 * for which tables, and with `-force` says what it drops. The real CLI, a
 * database written by the stock sqlite3 shell.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { GLOBAL_LOG, triggerName } from '../../src/cdc/names.ts';
import { defaultConfig } from '../../src/config/config.ts';
import { captureFixture, exists, sqlite3 } from '../cdc/capture-fixture.ts';
import { spawnCli, writeConfigFile } from '../helpers/node-harness.ts';

async function cleanup(
  configPath: string,
  ...extra: string[]
): Promise<{ code: number | null; output: string }> {
  const cli = spawnCli(['-config', configPath, '-cleanup', ...extra]);
  const code = await cli.exited;
  return { code, output: cli.output.join('\n') };
}

test('-cleanup refuses with pending changes (how many, which tables); -force drops them and says so', async () => {
  using f = captureFixture(
    'CREATE TABLE items (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE notes (id INTEGER PRIMARY KEY);',
  );
  sqlite3(f.path, "INSERT INTO items VALUES (1, 'a'), (2, 'b'); INSERT INTO notes VALUES (1);");
  f.db.close();
  const config = defaultConfig();
  config.db_path = f.path;
  config.logging.format = 'json';
  const configPath = writeConfigFile(config, join(f.dir, 'config.toml'));

  const refused = await cleanup(configPath);
  assert.equal(refused.code, 1, refused.output);
  assert.match(
    refused.output,
    /Error: -cleanup would drop 3 changes not yet published \(items: 2, notes: 1\)/,
  );
  assert.match(refused.output, /Try: .*-cleanup -force/);
  const db = new Database(f.path, { readonly: true });
  try {
    assert.ok(exists(db, triggerName('items', 'insert')), 'capture left in place');
    assert.equal(db.prepare(`SELECT count(*) FROM ${GLOBAL_LOG}`).pluck().get(), 3);
  } finally {
    db.close();
  }

  const forced = await cleanup(configPath, '-force');
  assert.equal(forced.code, 0, forced.output);
  assert.match(forced.output, /-force: dropping 3 changes not yet published \(items: 2, notes: 1\)/);
  assert.match(forced.output, /removed HarmonyLite triggers and tables/);

  const again = await cleanup(configPath);
  assert.equal(again.code, 0, again.output);
});
