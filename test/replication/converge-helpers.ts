/** Small helpers shared by the replication integration tests. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import { startNode, type TestNode, type TestNodeOptions } from '../helpers/node-harness.ts';

/**
 * Runs SQL in the stock sqlite3 shell (invariant 7), as an operator would.
 * `.timeout` only makes the shell wait for the write lock instead of failing
 * with "database is locked" while the node applies; nothing else is set.
 */
export function sqlite3Shell(dbPath: string, sql: string): string {
  const r = spawnSync('sqlite3', ['-bail', '-cmd', '.timeout 10000', dbPath, sql], { encoding: 'utf8' });
  assert.equal(r.error, undefined, `sqlite3 could not run: ${String(r.error)}`);
  assert.equal(r.status, 0, `sqlite3 failed (${r.status}): ${r.stderr}`);
  assert.equal(r.stderr, '', `sqlite3 wrote to stderr: ${r.stderr}`);
  return r.stdout;
}

/** Runs a read query on a fresh read-only connection, integers as bigint. */
export function query<T = unknown[]>(dbPath: string, sql: string, ...params: unknown[]): T[] {
  const db = new Database(dbPath, { readonly: true });
  try {
    db.defaultSafeIntegers(true);
    return db
      .prepare(sql)
      .raw(true)
      .all(...params) as T[];
  } finally {
    db.close();
  }
}

/** Closes every node, then the rest (servers, dirs), never throwing before all are closed. */
export async function closeAll(nodes: readonly (TestNode | undefined)[], ...rest: (() => unknown)[]) {
  const errors: unknown[] = [];
  for (const r of await Promise.allSettled(nodes.map((n) => n?.close()))) {
    if (r.status === 'rejected') errors.push(r.reason);
  }
  for (const f of rest) {
    try {
      await f();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
}

/** Every node's value of a metric counter (summed over labels). */
export async function counterValue(
  node: TestNode,
  name: 'deadLetters' | 'applied' | 'duplicatesSkipped' | 'walCheckpoints',
) {
  const m = await node.node.metrics[name].get();
  return m.values.reduce((s, v) => s + v.value, 0);
}

/**
 * Nodes 1 and 2, each pushed to `nodes` as soon as it runs (so the caller's
 * `closeAll(nodes, ...)` stops whatever started), both with `options`.
 */
export async function startTwoNodes(
  nodes: TestNode[],
  options: Omit<TestNodeOptions, 'nodeId'>,
): Promise<[TestNode, TestNode]> {
  for (const nodeId of [1, 2]) nodes.push(await startNode({ ...options, nodeId }));
  return nodes.slice(-2) as [TestNode, TestNode];
}

/** Inserts rows `from`..`to` of `items (id, v)` in one transaction on `app`, `v` from `value`. */
export function insertItems(
  app: Database.Database,
  from: number,
  to: number,
  value: (id: number) => string,
): void {
  const insert = app.prepare('INSERT INTO items (id, v) VALUES (?, ?)');
  app.transaction(() => {
    for (let i = from; i <= to; i++) insert.run(i, value(i));
  })();
}
