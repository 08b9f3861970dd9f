/**
 * Every identifier is quoted: tables and columns named with spaces, quotes,
 * dashes, unicode, glob/regex characters and SQL keywords are installed,
 * written by the stock sqlite3 shell, and scanned with their exact names.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { quoteIdent as q, quoteString as s } from '../../src/cdc/names.ts';
import { brief, captureFixture, sqlite3, triggersOn } from './capture-fixture.ts';

interface Case {
  readonly table: string;
  readonly key: string;
  readonly other: string;
}

const CASES: readonly Case[] = [
  { table: 'my table', key: 'first name', other: "it's" },
  { table: 'Ünïcødé 表', key: '键', other: 'émoji 🎉' },
  { table: 'order', key: 'select', other: 'group' },
  { table: `we"ird'-name`, key: 'say "hi"', other: 'dash-col' },
  { table: 'glob[1]*?.+(x)', key: '%_percent', other: '$^{}|\\' },
];

const SCHEMA = CASES.map((c) => `CREATE TABLE ${q(c.table)} (${q(c.key)} TEXT PRIMARY KEY, ${q(c.other)});`)
  .concat('CREATE TABLE "where" ("from" TEXT, "values" INTEGER);') // no primary key: keyed by rowid
  .join('\n');

test('tables and columns with spaces, quotes, dashes, unicode and keywords work end to end', () => {
  using f = captureFixture(SCHEMA);
  const installed = f.install();
  assert.deepEqual(installed.changed, [], 'a second install finds the quoted triggers already right');
  assert.deepEqual(
    installed.tables.map((t) => t.name),
    [...CASES.map((c) => c.table), 'where'].sort(),
  );
  for (const c of CASES) assert.equal(triggersOn(f.db, c.table).length, 3, `triggers on ${c.table}`);

  const writes = CASES.map(
    (c) =>
      `INSERT INTO ${q(c.table)} VALUES ('k1', ${s(`v of ${c.table}`)});` +
      `UPDATE ${q(c.table)} SET ${q(c.other)} = 'v2' WHERE ${q(c.key)} = 'k1';` +
      `UPDATE ${q(c.table)} SET ${q(c.key)} = 'k2';` +
      `DELETE FROM ${q(c.table)};`,
  );
  sqlite3(
    f.path,
    writes.join('\n') +
      `INSERT INTO "where" VALUES ('a "b" ''c''', 1); UPDATE "where" SET "values" = 2; DELETE FROM "where";`,
  );

  const expected: [string, string, Record<string, unknown>][] = CASES.flatMap((c) => [
    [c.table, 'insert', { [c.key]: 'k1', [c.other]: `v of ${c.table}` }],
    [c.table, 'update', { [c.key]: 'k1', [c.other]: 'v2' }],
    [c.table, 'delete', { [c.key]: 'k1', [c.other]: 'v2' }],
    [c.table, 'update', { [c.key]: 'k2', [c.other]: 'v2' }],
    [c.table, 'delete', { [c.key]: 'k2', [c.other]: 'v2' }],
  ]);
  expected.push(
    ['where', 'insert', { rowid: 1n, from: `a "b" 'c'`, values: 1n }],
    ['where', 'update', { rowid: 1n, from: `a "b" 'c'`, values: 2n }],
    ['where', 'delete', { rowid: 1n, from: `a "b" 'c'`, values: 2n }],
  );
  const changes = f.scan();
  assert.deepEqual(changes.map(brief), expected);
  assert.deepEqual(
    changes.filter((c) => c.table === CASES[0]!.table).map((c) => c.key),
    [['k1'], ['k1'], ['k1'], ['k2'], ['k2']],
  );
});
