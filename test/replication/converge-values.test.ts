/**
 * Exact values end to end: integers beyond 2^53 and at the 64-bit edges, REALs
 * that look integral (2.0 stays REAL), 1e300, unicode TEXT with emoji, BLOB
 * bytes and NULL arrive with the same storage class and the same value on every
 * node: identical `typeof()` and `quote()` (tableContents compares both).
 * Node 1 compresses its messages, node 2 does not: nodes interoperate.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  appConnection,
  startNode,
  tableContents,
  waitConverged,
  type TestNode,
} from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { closeAll, query, sqlite3Shell } from './converge-helpers.ts';

const SCHEMA = `
  CREATE TABLE vals (id INTEGER PRIMARY KEY, label TEXT, x, i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC);
  CREATE TABLE keyed (k PRIMARY KEY, v);
  CREATE TABLE strict_vals (id INTEGER PRIMARY KEY, a ANY, i INTEGER, r REAL, t TEXT, b BLOB) STRICT;
`;
const TABLES = ['vals', 'keyed', 'strict_vals'];

const MAX = 2n ** 63n - 1n;
const MIN = -(2n ** 63n);
const BEYOND_53 = 9007199254740993n; // 2^53 + 1: not representable as a double
const UNICODE = 'Grüße, 世界! 👩‍👩‍👧‍👦 🇫🇷 e\u0301 \u{10FFFF}';
const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_v, i) => i));

const dir = tempDir('hl-converge-values-');
let nats: TestNatsServer | undefined;
const nodes: TestNode[] = [];
let paths: string[] = [];

before(async () => {
  nats = await startNatsServer();
  for (const nodeId of [1, 2, 3]) {
    nodes.push(
      await startNode({
        dir: dir.path,
        nodeId,
        urls: [nats.url],
        schema: SCHEMA,
        configure: (c) => {
          c.replication_log.shards = 2;
          c.replication_log.compress = nodeId !== 2;
        },
      }),
    );
  }
  paths = nodes.map((n) => n.dbPath);
});

after(() => closeAll(nodes, () => nats?.close(), dir.remove));

/** `typeof(col), quote(col)` of one row on every node, once all agree and the row exists. */
async function typedEverywhere(table: string, cols: string[], where: string): Promise<string[][]> {
  const select = cols.map((c) => `typeof(${c}), quote(${c})`).join(', ');
  let seen: string[] = [];
  const sql = `SELECT ${select} FROM ${table} WHERE ${where}`;
  await waitFor(
    `${sql} identical on every node`,
    () => {
      seen = paths.map((p) => JSON.stringify(query(p, sql)));
      return seen[0] !== '[]' && seen.every((s) => s === seen[0]);
    },
    { timeoutMs: 20_000, seen: () => seen },
  );
  const rows = query<string[]>(paths[0]!, sql);
  assert.equal(rows.length, 1);
  const flat = rows[0]!;
  const pairs: string[][] = [];
  for (let i = 0; i < flat.length; i += 2) pairs.push([flat[i]!, flat[i + 1]!]);
  return pairs;
}

test('integers beyond 2^53 and at the 64-bit edges stay exact (better-sqlite3 writer)', async () => {
  const app = appConnection(paths[0]!);
  try {
    app.defaultSafeIntegers(true);
    const ins = app.prepare('INSERT INTO vals (id, label, x, i, r, t, n) VALUES (?, ?, ?, ?, ?, ?, ?)');
    app.transaction(() => {
      ins.run(1n, 'beyond 2^53', BEYOND_53, BEYOND_53, 0.5, 't', BEYOND_53);
      ins.run(2n, 'max', MAX, MAX, null, null, MAX);
      ins.run(3n, 'min', MIN, MIN, null, null, MIN);
      ins.run(MAX, 'max as key', -BEYOND_53, MIN + 1n, null, null, null);
      ins.run(MIN, 'min as key', 0n, -1n, null, null, null);
    })();
  } finally {
    app.close();
  }
  assert.deepEqual(await typedEverywhere('vals', ['x', 'i', 'n'], 'id = 1'), [
    ['integer', '9007199254740993'],
    ['integer', '9007199254740993'],
    ['integer', '9007199254740993'],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['x', 'i'], 'id = 2'), [
    ['integer', '9223372036854775807'],
    ['integer', '9223372036854775807'],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['x', 'i'], 'id = 3'), [
    ['integer', '-9223372036854775808'],
    ['integer', '-9223372036854775808'],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['id', 'x', 'i'], 'id = 9223372036854775807'), [
    ['integer', '9223372036854775807'],
    ['integer', '-9007199254740993'],
    ['integer', '-9223372036854775807'],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['id', 'i'], 'id = -9223372036854775808'), [
    ['integer', '-9223372036854775808'],
    ['integer', '-1'],
  ]);
  await waitConverged(paths, TABLES);
});

test('REAL stays REAL (2.0, -0.0, 1e300, extremes), through the sqlite3 shell and better-sqlite3', async () => {
  sqlite3Shell(
    paths[1]!,
    `INSERT INTO vals (id, label, x, i, r, n) VALUES (10, 'two point zero', 2.0, 2.0, 2.0, 2.0);
     INSERT INTO vals (id, label, x, r) VALUES (11, 'big', 1e300, -1e300);
     INSERT INTO vals (id, label, x, r) VALUES (12, 'extremes', 1.7976931348623157e308, 4.9406564584124654e-324);
     INSERT INTO vals (id, label, x, r) VALUES (13, 'fractions', 0.1, -2.5e-300);
     INSERT INTO vals (id, label, x, r) VALUES (14, 'integral beyond 2^53', 9007199254740993.0, 1e18);
     INSERT INTO strict_vals (id, a, i, r) VALUES (1, 2.0, 3, 4);`,
  );
  const app = appConnection(paths[2]!);
  try {
    // better-sqlite3 binds every JS number as REAL.
    app.prepare('INSERT INTO vals (id, label, x, r) VALUES (15, ?, ?, ?)').run('js numbers', 3, -0);
    app.prepare('INSERT INTO strict_vals (id, a, r) VALUES (2, ?, ?)').run(1e300, 7);
  } finally {
    app.close();
  }
  assert.deepEqual(await typedEverywhere('vals', ['x', 'i', 'r', 'n'], 'id = 10'), [
    ['real', '2.0'],
    ['integer', '2'], // INTEGER affinity converts on the origin too
    ['real', '2.0'],
    ['integer', '2'],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['x', 'r'], 'id = 11'), [
    ['real', '1.0e+300'],
    ['real', '-1.0e+300'],
  ]);
  const extremes = await typedEverywhere('vals', ['x', 'r'], 'id = 12');
  assert.deepEqual(
    extremes.map((p) => p[0]),
    ['real', 'real'],
  );
  assert.deepEqual(
    (await typedEverywhere('vals', ['x', 'r'], 'id = 14')).map((p) => p[0]),
    ['real', 'real'],
  );
  assert.deepEqual(await typedEverywhere('vals', ['x'], 'id = 15'), [['real', '3.0']]);
  assert.deepEqual(await typedEverywhere('strict_vals', ['a', 'i', 'r'], 'id = 1'), [
    ['real', '2.0'],
    ['integer', '3'],
    ['real', '4.0'],
  ]);
  assert.deepEqual(await typedEverywhere('strict_vals', ['a', 'r'], 'id = 2'), [
    ['real', '1.0e+300'],
    ['real', '7.0'],
  ]);
  // Exact bits, not just quote()'s 15 digits.
  for (const p of paths) {
    const [x, r] = query<number[]>(p, 'SELECT x, r FROM vals WHERE id = 12')[0]!;
    assert.equal(x, Number.MAX_VALUE);
    assert.equal(r, Number.MIN_VALUE);
    const [tenth] = query<number[]>(p, 'SELECT x FROM vals WHERE id = 13')[0]!;
    assert.equal(tenth, 0.1);
  }
  await waitConverged(paths, TABLES);
});

test('unicode TEXT, BLOB bytes and NULL arrive identical; keys of every storage class work', async () => {
  const big = randomBytes(200 * 1024);
  const app = appConnection(paths[0]!);
  try {
    app.transaction(() => {
      app
        .prepare('INSERT INTO vals (id, label, x, t, b) VALUES (20, ?, ?, ?, ?)')
        .run('unicode', UNICODE, UNICODE, ALL_BYTES);
      app.prepare("INSERT INTO vals (id, label, x, t, b) VALUES (21, 'empty', '', '', x'')").run();
      app.prepare("INSERT INTO vals (id, label, x, t, b) VALUES (22, 'nulls', NULL, NULL, NULL)").run();
      app.prepare('INSERT INTO vals (id, label, b) VALUES (23, ?, ?)').run('big blob', big);
      app.prepare('INSERT INTO vals (id, label, t) VALUES (24, ?, ?)').run('nul inside', 'a\u0000b');
      const key = app.prepare('INSERT INTO keyed (k, v) VALUES (?, ?)');
      app.defaultSafeIntegers(true);
      key.safeIntegers(true).run(BEYOND_53, 'integer key');
      key.run(0.5, 'real key');
      key.run(UNICODE, 'text key');
      key.run(Buffer.from([0, 255, 0]), 'blob key');
      key.run(MIN, ALL_BYTES);
    })();
  } finally {
    app.close();
  }
  sqlite3Shell(
    paths[1]!,
    `INSERT INTO vals (id, label, x, b) VALUES (25, 'shell', '日本語 🎌', zeroblob(3));
     INSERT INTO strict_vals (id, a, t, b) VALUES (3, x'cafe', 'ü', x'00');`,
  );
  assert.deepEqual(await typedEverywhere('vals', ['x', 't', 'b'], 'id = 20'), [
    ['text', `'${UNICODE}'`],
    ['text', `'${UNICODE}'`],
    ['blob', `X'${ALL_BYTES.toString('hex').toUpperCase()}'`],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['x', 't', 'b'], 'id = 21'), [
    ['text', "''"],
    ['text', "''"],
    ['blob', "X''"],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['x', 't', 'b', 'r'], 'id = 22'), [
    ['null', 'NULL'],
    ['null', 'NULL'],
    ['null', 'NULL'],
    ['null', 'NULL'],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['x', 'b'], 'id = 25'), [
    ['text', "'日本語 🎌'"],
    ['blob', "X'000000'"],
  ]);
  assert.deepEqual(await typedEverywhere('strict_vals', ['a', 't', 'b'], 'id = 3'), [
    ['blob', "X'CAFE'"],
    ['text', "'ü'"],
    ['blob', "X'00'"],
  ]);
  await waitConverged(paths, TABLES);
  for (const p of paths) {
    const [b] = query<Buffer[]>(p, 'SELECT b FROM vals WHERE id = 23')[0]!;
    assert.ok(big.equals(b!), 'a 200 KiB blob arrives byte for byte');
    const [len, hex] = query<unknown[]>(
      p,
      'SELECT length(CAST(t AS BLOB)), hex(t) FROM vals WHERE id = 24',
    )[0]!;
    assert.deepEqual([len, hex], [3n, '610062'], 'a NUL inside TEXT survives');
    assert.equal(query(p, 'SELECT k FROM keyed').length, 5);
    assert.deepEqual(query(p, 'SELECT typeof(k), v FROM keyed WHERE k = ?', BEYOND_53)[0], [
      'integer',
      'integer key',
    ]);
  }
});

test('updates and deletes keyed by exotic values reach every node', async () => {
  const app = appConnection(paths[2]!);
  try {
    app.defaultSafeIntegers(true);
    app.transaction(() => {
      app.prepare('UPDATE keyed SET v = ? WHERE k = ?').run(MAX, BEYOND_53);
      app.prepare('UPDATE keyed SET v = 2.0 WHERE k = ?').run(UNICODE);
      app.prepare('DELETE FROM keyed WHERE k = ?').run(Buffer.from([0, 255, 0]));
      app.prepare('UPDATE keyed SET k = ? WHERE k = 0.5').run(-0.25);
      app.prepare('UPDATE vals SET x = ?, r = NULL WHERE id = ?').run(MIN, 11n);
    })();
  } finally {
    app.close();
  }
  await waitFor(
    'the blob-keyed row deleted everywhere',
    () => paths.every((p) => query(p, 'SELECT count(*) FROM keyed')[0]?.[0] === 4n),
    { timeoutMs: 20_000 },
  );
  assert.deepEqual(await typedEverywhere('keyed', ['v'], `k = ${BEYOND_53}`), [
    ['integer', '9223372036854775807'],
  ]);
  assert.deepEqual(await typedEverywhere('keyed', ['k', 'v'], 'k = -0.25'), [
    ['real', '-0.25'],
    ['text', "'real key'"],
  ]);
  assert.deepEqual(await typedEverywhere('vals', ['x', 'r'], 'id = 11'), [
    ['integer', '-9223372036854775808'],
    ['null', 'NULL'],
  ]);
  await waitConverged(paths, TABLES);
  const contents = TABLES.map((t) => tableContents(paths[0]!, t));
  assert.ok(contents.every((c) => c.length > 2));
});

/** Every node's `typeof` and `hex` of each column of the rows `where` selects (quote() of bad UTF-8 is lossy). */
function hexes(p: string, table: string, columns: readonly string[], where: string): string {
  const select = columns.map((c) => `typeof(${c}) || ':' || hex(${c})`).join(', ');
  return JSON.stringify(query(p, `SELECT ${select} FROM ${table} WHERE ${where} ORDER BY 1`));
}

async function sameHexEverywhere(table: string, columns: readonly string[], where: string, want: string[][]) {
  const expected = JSON.stringify(want);
  let seen: string[] = [];
  await waitFor(
    `${table} ${where}: ${expected} on every node`,
    () => (seen = paths.map((p) => hexes(p, table, columns, where))).every((s) => s === expected),
    { seen: () => seen },
  );
}

test('TEXT that is not valid UTF-8 arrives byte for byte; the origin row is not rewritten by its own replay', async () => {
  sqlite3Shell(
    paths[0]!,
    "INSERT INTO vals (id, label, t, x) VALUES (900, 'latin-1', CAST(x'636166e9' AS TEXT), CAST(x'ff00fe' AS TEXT));" +
      "INSERT INTO strict_vals (id, t) VALUES (900, CAST(x'c3' AS TEXT));" +
      "INSERT INTO keyed VALUES (CAST(x'6be9' AS TEXT), CAST(x'e9' AS TEXT));",
  );
  await sameHexEverywhere('vals', ['t', 'x'], 'id = 900', [['text:636166E9', 'text:FF00FE']]);
  await sameHexEverywhere('strict_vals', ['t'], 'id = 900', [['text:C3']]);
  await sameHexEverywhere('keyed', ['k', 'v'], "hex(k) = '6BE9'", [['text:6BE9', 'text:E9']]);

  // Updated and deleted elsewhere, by a key that is not valid UTF-8 either.
  sqlite3Shell(
    paths[1]!,
    "UPDATE vals SET t = CAST(x'4c6174696ee9' AS TEXT) WHERE id = 900; DELETE FROM keyed WHERE k = CAST(x'6be9' AS TEXT);",
  );
  await sameHexEverywhere('vals', ['t', 'x'], 'id = 900', [['text:4C6174696EE9', 'text:FF00FE']]);
  await sameHexEverywhere('keyed', ['k'], "hex(k) = '6BE9'", []);

  // Node 1 replays every stream from the start, its own batches included: its rows keep their bytes.
  const origin = nodes[0]!;
  const reached = origin.node.consumers.map((c) => c.position);
  await origin.close();
  sqlite3Shell(origin.dbPath, 'UPDATE __harmonylite___positions SET stream_seq = 0;');
  const replayed = await startNode({ dir: dir.path, nodeId: 1, urls: [nats!.url] });
  nodes[0] = replayed;
  await waitFor(
    'node 1 replayed its streams up to where it was',
    () => replayed.node.consumers.every((c, i) => c.position >= reached[i]!),
    { seen: () => replayed.node.consumers.map((c) => c.position) },
  );
  await sameHexEverywhere('vals', ['t', 'x'], 'id = 900', [['text:4C6174696EE9', 'text:FF00FE']]);
  await sameHexEverywhere('strict_vals', ['t'], 'id = 900', [['text:C3']]);
});
