/**
 * The applications of a chaos run: one random writer per node database, on
 * whether its node runs or not (inserts, updates, deletes, key changes,
 * composite keys, BLOBs, a UNIQUE column that writers on different nodes
 * collide on; every 10th write of node 3 through the sqlite3 shell).
 * Every committed write is recorded; each upsert carries a unique token, by
 * which the checker finds it in the streams.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { waitFor } from '../helpers/wait-for.ts';
import { CHAOS_TABLES, type ChaosNode } from './chaos-cluster.ts';
import { mulberry32 } from '../helpers/prng.ts';

export interface Write {
  readonly node: number;
  readonly table: string;
  readonly key: string;
  readonly op: 'upsert' | 'delete';
  /** The unique value written (upserts), to find the write in the streams. */
  readonly token?: string;
  /** What a fault was doing to the node when the write was made (see `ChaosNode.writeLabel`), or later learnt. */
  label?: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const execFileAsync = promisify(execFile);
/** How long one write may wait for the database lock, in short waits that keep the event loop turning. */
const LOCK_WAIT_MS = 60_000;

/**
 * Runs `write` until it gets the lock. SQLite's busy wait blocks the thread: a
 * long one here would stall the fault loop too, which then could not SIGCONT
 * the paused node that holds the lock. So each try waits briefly and the
 * retries yield to the event loop. A statement that failed busy did not commit.
 */
async function withLock<T>(write: () => T): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      return write();
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'SQLITE_BUSY' || Date.now() > deadline) throw err;
      await sleep(20);
    }
  }
}

export class ChaosWriters {
  readonly writes: Write[] = [];
  readonly #seed: number;
  #writing = false;
  readonly #paused = new Set<number>();
  /** Nodes whose writer is between starting a write and recording it. */
  readonly #busy = new Set<number>();
  #loops: Promise<void>[] = [];

  constructor(seed: number) {
    this.#seed = seed;
  }

  start(nodes: readonly ChaosNode[]): void {
    this.#writing = true;
    this.#loops = nodes.map((n) => this.#write(n));
  }

  async stop(): Promise<void> {
    this.#writing = false;
    await Promise.all(this.#loops);
  }

  /** Holds the writers of `nodes` after their current write; resolves once none of them is mid-write. */
  async pause(nodes: readonly ChaosNode[]): Promise<void> {
    for (const n of nodes) this.#paused.add(n.id);
    await waitFor('paused writers to finish their current write', () =>
      nodes.every((n) => !this.#busy.has(n.id)),
    );
  }

  resume(): void {
    this.#paused.clear();
  }

  /** Labels the upserts whose token is in `tokens` (writes a fault learnt something about). */
  label(tokens: ReadonlySet<string>, label: string): number {
    let labelled = 0;
    for (const w of this.writes)
      if (w.token !== undefined && tokens.has(w.token)) {
        w.label = label;
        labelled++;
      }
    return labelled;
  }

  async #write(n: ChaosNode): Promise<void> {
    // One sequence per writer: the same seed gives each writer the same choices.
    const rand = mulberry32(this.#seed + n.id * 0x9e3779b9);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const db = new Database(n.dbPath, { timeout: 100 });
    let counter = 0;
    const record = (w: Write) =>
      this.writes.push(n.writeLabel === undefined ? w : { ...w, label: n.writeLabel });
    try {
      while (this.#writing) {
        if (this.#paused.has(n.id)) {
          await sleep(10);
          continue;
        }
        this.#busy.add(n.id);
        const token = `${n.id}:${++counter}`;
        const table = pick(CHAOS_TABLES);
        const r = rand();
        const useShell = n.id === 3 && counter % 10 === 0;
        if (table === 'kv') {
          const k = 1 + Math.floor(rand() * 40);
          let sql: string;
          let write: Write;
          const keyChange = r >= 0.15 && r < 0.25;
          if (r < 0.15) {
            sql = `DELETE FROM kv WHERE k = ${k}`;
            write = { node: n.id, table, key: String(k), op: 'delete' };
          } else if (keyChange) {
            const to = 1 + Math.floor(rand() * 40);
            // A key change: only when the target key is free on this node (the app's own constraint).
            sql = `UPDATE kv SET k = ${to}, v = '${token}', writer = ${n.id} WHERE k = ${k} AND NOT EXISTS (SELECT 1 FROM kv WHERE k = ${to})`;
            write = { node: n.id, table, key: String(to), op: 'upsert', token };
          } else {
            sql = `INSERT INTO kv (k, v, writer) VALUES (${k}, '${token}', ${n.id}) ON CONFLICT (k) DO UPDATE SET v = excluded.v, writer = excluded.writer`;
            write = { node: n.id, table, key: String(k), op: 'upsert', token };
          }
          let changes: number;
          if (useShell) {
            // Its own process: its busy wait (10 s) does not block this one.
            const res = await execFileAsync('sqlite3', [
              '-cmd',
              '.timeout 10000',
              n.dbPath,
              `${sql}; SELECT changes();`,
            ]).catch((err: unknown) => {
              throw new Error(
                `sqlite3 shell failed on node ${n.id}: ${(err as { stderr?: string }).stderr ?? String(err)}`,
              );
            });
            changes = Number(res.stdout.trim());
          } else {
            changes = (await withLock(() => db.prepare(sql).run())).changes;
          }
          // A key change that did not happen (source missing or target taken) is not a write.
          if (changes > 0 || !keyChange) record(write);
        } else if (table === 'users') {
          const id = 1 + Math.floor(rand() * 12);
          if (r < 0.15) {
            await withLock(() => db.prepare('DELETE FROM users WHERE id = ?').run(id));
            record({ node: n.id, table, key: String(id), op: 'delete' });
          } else {
            // Few emails for many ids: concurrent writers on different nodes take the same
            // email for different ids, which replication must settle the same way everywhere.
            // Locally the application keeps the constraint: it writes only a free email.
            const email = `e${Math.floor(rand() * 8)}@x`;
            const { changes } = await withLock(() =>
              db
                .prepare(
                  'INSERT INTO users (id, email, v, writer) SELECT ?, ?, ?, ? ' +
                    'WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = ? AND id <> ?) ' +
                    'ON CONFLICT (id) DO UPDATE SET email = excluded.email, v = excluded.v, writer = excluded.writer',
                )
                .run(id, email, token, n.id, email, id),
            );
            if (changes > 0) record({ node: n.id, table, key: String(id), op: 'upsert', token });
          }
        } else {
          const a = pick(['x', 'y', 'z']);
          const b = Math.floor(rand() * 10);
          if (r < 0.2) {
            await withLock(() => db.prepare('DELETE FROM pairs WHERE a = ? AND b = ?').run(a, b));
            record({ node: n.id, table, key: `${a}/${b}`, op: 'delete' });
          } else {
            await withLock(() =>
              db
                .prepare(
                  'INSERT INTO pairs (a, b, v, writer) VALUES (?, ?, ?, ?) ON CONFLICT (a, b) DO UPDATE SET v = excluded.v, writer = excluded.writer',
                )
                .run(a, b, Buffer.from(token), n.id),
            );
            record({ node: n.id, table, key: `${a}/${b}`, op: 'upsert', token });
          }
        }
        this.#busy.delete(n.id);
        await sleep(5 + Math.floor(rand() * 20));
      }
    } finally {
      this.#busy.delete(n.id);
      db.close();
    }
  }
}
