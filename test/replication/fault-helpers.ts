/**
 * Shared pieces of the fault tests: a workload whose final state is known
 * exactly (every row records the version of its last write), checks of a
 * node's internal tables, and a background write loop that measures how long
 * the application waited.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { changeLogTable, DEAD_LETTERS, GLOBAL_LOG, quoteIdent as q } from '../../src/cdc/names.ts';
import type { TestNatsServer } from '../helpers/nats-server.ts';
import { mulberry32 } from '../helpers/prng.ts';
import { waitFor } from '../helpers/wait-for.ts';

export const ITEMS_SCHEMA =
  'CREATE TABLE items (id INTEGER PRIMARY KEY, origin INTEGER NOT NULL, ver INTEGER NOT NULL, note TEXT)';

/**
 * The application on one node: inserts, updates and deletes rows it owns
 * (ids `origin * 1e6 + n`), each update bumping `ver`. The rows it expects
 * everywhere at the end are exactly `expected`: a lost change shows as a
 * missing row or a lower version, a re-applied old change as a lower version
 * or a deleted row come back.
 */
export class RowWriter {
  readonly origin: number;
  /** id -> ver of every live row this writer owns. */
  readonly expected = new Map<number, number>();
  readonly #live: number[] = [];
  readonly #db: Database.Database;
  readonly #rand: () => number;
  readonly #insert: Database.Statement;
  readonly #update: Database.Statement;
  readonly #delete: Database.Statement;
  #next = 1;
  /** Operations committed. */
  ops = 0;

  constructor(dbPath: string, origin: number, seed = origin) {
    this.origin = origin;
    this.#db = new Database(dbPath); // an application connection with default settings
    this.#rand = mulberry32(seed);
    this.#insert = this.#db.prepare('INSERT INTO items (id, origin, ver, note) VALUES (?, ?, 1, ?)');
    this.#update = this.#db.prepare('UPDATE items SET ver = ?, note = ? WHERE id = ?');
    this.#delete = this.#db.prepare('DELETE FROM items WHERE id = ?');
  }

  /** One transaction of `ops` operations; the expectation changes only if it commits. */
  tick(ops = 5): void {
    const live = [...this.#live];
    const changed = new Map<number, number | undefined>(); // id -> new ver, undefined = deleted
    let next = this.#next;
    this.#db.transaction(() => {
      for (let i = 0; i < ops; i++) {
        const r = this.#rand();
        if (live.length < 5 || r < 0.4) {
          const id = this.origin * 1_000_000 + next++;
          this.#insert.run(id, this.origin, `n${this.origin} insert`);
          live.push(id);
          changed.set(id, 1);
        } else if (r < 0.92) {
          const id = live[Math.floor(this.#rand() * live.length)]!;
          const ver = (changed.has(id) ? changed.get(id)! : this.expected.get(id)!) + 1;
          this.#update.run(ver, `n${this.origin} v${ver}`, id);
          changed.set(id, ver);
        } else {
          const at = Math.floor(this.#rand() * live.length);
          this.#delete.run(live[at]!);
          changed.set(live[at]!, undefined);
          live.splice(at, 1);
        }
      }
    })();
    this.#next = next;
    this.#live.splice(0, this.#live.length, ...live);
    for (const [id, ver] of changed) {
      if (ver === undefined) this.expected.delete(id);
      else this.expected.set(id, ver);
    }
    this.ops += ops;
  }

  /** Bumps one existing row to a new version (or inserts it), in its own transaction. */
  write(id: number): number {
    const ver = (this.expected.get(id) ?? 0) + 1;
    if (ver === 1) {
      this.#insert.run(id, this.origin, `n${this.origin} insert`);
      this.#live.push(id);
    } else this.#update.run(ver, `n${this.origin} v${ver}`, id);
    this.expected.set(id, ver);
    this.ops++;
    return ver;
  }

  close(): void {
    this.#db.close();
  }
}

/** The rows every node must hold: [id, origin, ver] sorted by id. */
export function expectedRows(writers: readonly RowWriter[]): [number, number, number][] {
  const rows: [number, number, number][] = [];
  for (const w of writers) for (const [id, ver] of w.expected) rows.push([id, w.origin, ver]);
  return rows.sort((a, b) => a[0] - b[0]);
}

export function actualRows(dbPath: string): [number, number, number][] {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare('SELECT id, origin, ver FROM items ORDER BY id').raw(true).all() as [
      number,
      number,
      number,
    ][];
  } finally {
    db.close();
  }
}

/** Rows of `dbPath` that differ from the expected ones (a few, for the failure message). */
export function diffRows(dbPath: string, writers: readonly RowWriter[]): string[] {
  const want = new Map(expectedRows(writers).map((r) => [r[0], r]));
  const have = new Map(actualRows(dbPath).map((r) => [r[0], r]));
  const out: string[] = [];
  for (const [id, r] of want) {
    const h = have.get(id);
    if (h === undefined) out.push(`missing ${id} v${r[2]}`);
    else if (h[2] !== r[2]) out.push(`${id}: v${h[2]}, want v${r[2]}`);
  }
  for (const id of have.keys()) if (!want.has(id)) out.push(`unexpected ${id}`);
  return out;
}

/** How many rows of `origin` a database holds. */
export function countOrigin(dbPath: string, origin: number): number {
  const db = new Database(dbPath, { readonly: true });
  try {
    return db.prepare('SELECT count(*) FROM items WHERE origin = ?').pluck().get(origin) as number;
  } finally {
    db.close();
  }
}

/** True when every node holds exactly the expected rows. */
export function allExpected(dbPaths: readonly string[], writers: readonly RowWriter[]): boolean {
  const want = JSON.stringify(expectedRows(writers));
  return dbPaths.every((p) => JSON.stringify(actualRows(p)) === want);
}

/** A node's internal state after a clean convergence: nothing pending, nothing dead-lettered. */
export function internalState(
  dbPath: string,
  table = 'items',
): { pending: number; globalLog: number; deadLetters: number } {
  const db = new Database(dbPath, { readonly: true });
  try {
    const count = (sql: string) => db.prepare(sql).pluck().get() as number;
    return {
      pending: count(`SELECT count(*) FROM ${q(changeLogTable(table))} WHERE state = 0`),
      globalLog: count(`SELECT count(*) FROM ${q(GLOBAL_LOG)}`),
      deadLetters: count(`SELECT count(*) FROM ${q(DEAD_LETTERS)}`),
    };
  } finally {
    db.close();
  }
}

export function assertClean(dbPath: string, table = 'items'): void {
  assert.deepEqual(internalState(dbPath, table), { pending: 0, globalLog: 0, deadLetters: 0 }, dbPath);
}

/**
 * Runs the writers in the background, one small transaction each per round,
 * until stop() is called. Records the longest time one transaction took (the
 * application must never be blocked by replication) and the first error.
 */
export function writeContinuously(
  writers: readonly RowWriter[],
  options: { opsPerTxn?: number; pauseMs?: number } = {},
): { stop(): Promise<void>; readonly maxTxnMs: number; readonly error: unknown } {
  let stopped = false;
  let maxTxnMs = 0;
  let error: unknown;
  const loop = (async () => {
    while (!stopped) {
      for (const w of writers) {
        const t0 = performance.now();
        try {
          w.tick(options.opsPerTxn ?? 5);
        } catch (err) {
          error ??= err;
          stopped = true;
          return;
        }
        maxTxnMs = Math.max(maxTxnMs, performance.now() - t0);
      }
      await sleep(options.pauseMs ?? 2);
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
    },
    get maxTxnMs() {
      return maxTxnMs;
    },
    get error() {
      return error;
    },
  };
}

/** Free loopback ports, found by binding port 0 (the caller binds them soon after). */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** With FAULT_DEBUG=1, prints what happened (phases and the nodes' notable log lines) to stderr. */
export function debug(...parts: unknown[]): void {
  if (process.env.FAULT_DEBUG)
    process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${parts.map(String).join(' ')}\n`);
}

/** Prints a node's log (without the nats-server's lines) when the test failed or with FAULT_DEBUG=1. */
export function dumpLogs(name: string, records: readonly Record<string, unknown>[], failed: boolean): void {
  if (!failed && !process.env.FAULT_DEBUG) return;
  for (const r of records) {
    if (r.component === 'nats-server') continue;
    const { level, time, msg, ...rest } = r;
    process.stderr.write(
      `${name} ${new Date(Number(time)).toISOString().slice(11, 23)} ${String(level)} ${String(msg)} ${JSON.stringify(rest).slice(0, 300)}\n`,
    );
  }
}

/** True when every thread of `pid` is stopped (state T): a SIGSTOP takes effect asynchronously. */
function stopped(pid: number): boolean {
  try {
    return readdirSync(`/proc/${pid}/task`).every((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'T';
    });
  } catch {
    return false;
  }
}

/** Sends SIGSTOP to a process and waits until it really is stopped: until then it may still answer. */
export async function freezePid(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  await waitFor(`process ${pid} to be stopped`, () => stopped(pid), { timeoutMs: 5000, intervalMs: 5 });
}

/** Freezes a nats-server (SIGSTOP): its connections stay open, nothing is answered. */
export async function freeze(server: TestNatsServer): Promise<void> {
  await freezePid(server.server.pid);
}
