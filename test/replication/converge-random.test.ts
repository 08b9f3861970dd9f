/**
 * Invariant 3 under a seeded random workload: concurrent writes on three nodes
 * over a small key space (same-row conflicts, deletes racing updates,
 * key-changing updates, parent/child rows with FOREIGN KEY enforced by the
 * application), some batched in transactions, some through the sqlite3 shell;
 * then quiescence, and every user table must be identical on every node.
 *
 * Reproduce a failure with HL_SEEDS=<seed,...> (printed on failure).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { startNode, waitConverged, type TestNode } from '../helpers/node-harness.ts';
import { startNatsServer, type TestNatsServer } from '../helpers/nats-server.ts';
import { mulberry32 } from '../helpers/prng.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { closeAll, counterValue, query, sqlite3Shell } from './converge-helpers.ts';

class Rng {
  readonly next: () => number;
  constructor(readonly seed: number) {
    this.next = mulberry32(seed);
  }
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  text(): string {
    return this.pick(['a', 'b', 'é', '😀', 'zz', '']) + this.int(0, 999);
  }
  /** A value of any storage class (the n column has no declared type). */
  value(): unknown {
    switch (this.int(0, 5)) {
      case 0:
        return null;
      case 1:
        return BigInt(this.int(-1000, 1000)) * 10_000_000_000_000n;
      case 2:
        return this.int(0, 100) / 4;
      case 3:
        return this.text();
      case 4:
        return Buffer.from([this.int(0, 255), this.int(0, 255)]);
      default:
        return BigInt(this.int(0, 5));
    }
  }
}

/** Seeds: fixed ones, plus a fresh one per run (printed on failure), or HL_SEEDS. */
function seeds(fixed: number[]): number[] {
  const env = process.env.HL_SEEDS;
  if (env !== undefined && env !== '') return env.split(',').map((s) => Number(s.trim()));
  return [...fixed, Math.floor(Math.random() * 0xffffffff)];
}

type Op = { weight: number; run: (db: Database.Database, r: Rng) => void };

function pickOp(ops: readonly Op[], r: Rng): Op {
  const total = ops.reduce((s, o) => s + o.weight, 0);
  let x = r.next() * total;
  for (const o of ops) {
    x -= o.weight;
    if (x < 0) return o;
  }
  return ops[ops.length - 1]!;
}

/** Errors an application gets and handles (constraint violations); anything else fails the test. */
function tolerate(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (!String((err as { code?: string }).code ?? '').startsWith('SQLITE_CONSTRAINT')) throw err;
  }
}

interface Workload {
  readonly schema: string;
  readonly tables: readonly string[];
  readonly ops: readonly Op[];
  /** SQL for the sqlite3 shell writer, now and then. */
  shell(r: Rng): string;
}

/**
 * Runs `count` operations spread over the nodes' application connections,
 * yielding to the event loop between bursts so that publishing and applying
 * interleave with the writes; a third of the bursts run in one transaction.
 */
async function runWorkload(
  w: Workload,
  apps: Database.Database[],
  paths: string[],
  r: Rng,
  count: number,
): Promise<void> {
  let done = 0;
  while (done < count) {
    const node = r.int(0, apps.length - 1);
    const db = apps[node]!;
    const burst = r.int(1, 12);
    if (r.chance(0.02)) {
      sqlite3Shell(paths[node]!, w.shell(r));
      done++;
    } else if (r.chance(0.35)) {
      db.exec('BEGIN IMMEDIATE');
      try {
        for (let i = 0; i < burst; i++) tolerate(() => pickOp(w.ops, r).run(db, r));
        db.exec('COMMIT');
      } catch (err) {
        if (db.inTransaction) db.exec('ROLLBACK');
        throw err;
      }
      done += burst;
    } else {
      for (let i = 0; i < burst; i++) tolerate(() => pickOp(w.ops, r).run(db, r));
      done += burst;
    }
    await yieldToLoop();
  }
}

/** Starts three nodes on one fresh nats-server and runs the workload for every seed, checking convergence each time. */
function convergenceSuite(
  name: string,
  w: Workload,
  shards: number,
  fixedSeeds: number[],
  opsPerSeed: number,
  expectDisplaced = false,
  shardByTable: string[] = [],
) {
  describe(name, () => {
    const dir = tempDir('hl-converge-random-');
    let nats: TestNatsServer | undefined;
    const nodes: TestNode[] = [];
    const apps: Database.Database[] = [];
    let paths: string[] = [];

    before(async () => {
      nats = await startNatsServer();
      for (const nodeId of [1, 2, 3]) {
        nodes.push(
          await startNode({
            dir: dir.path,
            nodeId,
            urls: [nats.url],
            schema: w.schema,
            configure: (c) => {
              c.replication_log.shards = shards;
              c.replication_log.shard_by_table = shardByTable;
            },
          }),
        );
      }
      paths = nodes.map((n) => n.dbPath);
      for (const p of paths) {
        const db = new Database(p);
        db.pragma('foreign_keys = ON'); // the application enforces its foreign keys
        apps.push(db);
      }
    });

    after(async () => {
      for (const db of apps) db.close();
      await closeAll(nodes, () => nats?.close(), dir.remove);
    });

    const all = seeds(fixedSeeds);
    for (const [i, seed] of all.entries()) {
      test(`seed ${seed}: ${opsPerSeed} operations on 3 nodes, then identical tables`, async () => {
        try {
          await runWorkload(w, apps, paths, new Rng(seed), opsPerSeed);
          await waitConverged(paths, w.tables, 45_000);
        } catch (err) {
          // The seeds run one after the other on the same nodes: replay them all up to this one.
          // (The seed fixes the operations; their interleaving with replication stays timing-dependent.)
          const replay = all.slice(0, i + 1).join(',');
          console.error(`converge-random: ${name}: failed with seed ${seed} (rerun with HL_SEEDS=${replay})`);
          throw err;
        }
        for (const n of nodes) {
          assert.equal(await counterValue(n, 'deadLetters'), 0, 'no message was dead-lettered');
          for (const s of n.node.status().shards) assert.equal(s.state.type, 'running', JSON.stringify(s));
        }
        if (expectDisplaced) {
          // The collisions really happened on apply (not only at the origin).
          let displaced = 0;
          for (const n of nodes) {
            displaced += (await n.node.metrics.uniqueDisplaced.get()).values.reduce((a, v) => a + v.value, 0);
          }
          assert.ok(displaced > 0, 'rows were displaced by UNIQUE collisions on apply');
        }
        const rows = w.tables.map((t) => Number(query(paths[0]!, `SELECT count(*) FROM "${t}"`)[0]![0]));
        assert.ok(
          rows.reduce((a, b) => a + b, 0) > 0,
          `the workload left rows to compare: ${rows.join(', ')}`,
        );
      });
    }
  });
}

// Shards 4: every change of one row travels on one shard, so the last change of a key in its
// stream wins on every node; rows of different keys never interact (no UNIQUE but the key).
// Parents and children travel on different shards: a child may arrive before its parent, and
// apply must not enforce the foreign key (the origin did).
const ITEMS = 24;
const general: Workload = {
  schema: `
    CREATE TABLE items (id INTEGER PRIMARY KEY, val TEXT, n);
    CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
    CREATE TABLE notes (body TEXT, n INTEGER);
    CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
    CREATE TABLE child (
      id INTEGER PRIMARY KEY,
      parent_id INTEGER NOT NULL REFERENCES parent (id) ON DELETE CASCADE,
      v TEXT
    );
  `,
  tables: ['items', 'pairs', 'notes', 'parent', 'child'],
  ops: [
    {
      weight: 4,
      run: (db, r) =>
        db
          .prepare('INSERT INTO items (id, val, n) VALUES (?, ?, ?)')
          .run(r.int(1, ITEMS), r.text(), r.value()),
    },
    {
      weight: 3,
      run: (db, r) =>
        db
          .prepare(
            'INSERT INTO items (id, val, n) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET val = excluded.val',
          )
          .run(r.int(1, ITEMS), r.text(), r.value()),
    },
    {
      weight: 2,
      run: (db, r) =>
        db
          .prepare('INSERT OR REPLACE INTO items (id, val, n) VALUES (?, ?, ?)')
          .run(r.int(1, ITEMS), r.text(), null),
    },
    {
      weight: 5,
      run: (db, r) =>
        db.prepare('UPDATE items SET val = ?, n = ? WHERE id = ?').run(r.text(), r.value(), r.int(1, ITEMS)),
    },
    {
      weight: 1,
      run: (db, r) => {
        const lo = r.int(1, ITEMS);
        db.prepare("UPDATE items SET val = val || '+' WHERE id BETWEEN ? AND ?").run(lo, lo + 4);
      },
    },
    {
      weight: 3,
      run: (db, r) =>
        db.prepare('UPDATE items SET id = ? WHERE id = ?').run(r.int(1, ITEMS), r.int(1, ITEMS)),
    },
    { weight: 4, run: (db, r) => db.prepare('DELETE FROM items WHERE id = ?').run(r.int(1, ITEMS)) },
    {
      weight: 3,
      run: (db, r) =>
        db
          .prepare(
            'INSERT INTO pairs (a, b, v) VALUES (?, ?, ?) ON CONFLICT (a, b) DO UPDATE SET v = excluded.v',
          )
          .run(r.pick(['x', 'y', 'z']), r.int(1, 6), r.value()),
    },
    {
      weight: 2,
      run: (db, r) =>
        db
          .prepare('UPDATE pairs SET b = ?, v = ? WHERE a = ? AND b = ?')
          .run(r.int(1, 6), r.value(), r.pick(['x', 'y', 'z']), r.int(1, 6)),
    },
    {
      weight: 2,
      run: (db, r) =>
        db.prepare('DELETE FROM pairs WHERE a = ? AND b = ?').run(r.pick(['x', 'y', 'z']), r.int(1, 6)),
    },
    {
      // A rowid-keyed table: concurrent inserts on several nodes take the same rowids.
      weight: 1,
      run: (db, r) => db.prepare('INSERT INTO notes (body, n) VALUES (?, ?)').run(r.text(), r.int(0, 9)),
    },
    {
      weight: 1,
      run: (db, r) => db.prepare('UPDATE notes SET n = n + 1 WHERE rowid = ?').run(r.int(1, 10)),
    },
    { weight: 1, run: (db, r) => db.prepare('DELETE FROM notes WHERE rowid = ?').run(r.int(1, 10)) },
    {
      weight: 3,
      run: (db, r) =>
        db
          .prepare(
            'INSERT INTO parent (id, name) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET name = excluded.name',
          )
          .run(r.int(1, 8), r.text()),
    },
    { weight: 1, run: (db, r) => db.prepare('DELETE FROM parent WHERE id = ?').run(r.int(1, 8)) },
    {
      weight: 4,
      run: (db, r) =>
        db
          .prepare('INSERT OR REPLACE INTO child (id, parent_id, v) VALUES (?, ?, ?)')
          .run(r.int(1, 30), r.int(1, 8), r.text()),
    },
    {
      weight: 2,
      run: (db, r) =>
        db.prepare('UPDATE child SET parent_id = ? WHERE id = ?').run(r.int(1, 8), r.int(1, 30)),
    },
    { weight: 1, run: (db, r) => db.prepare('DELETE FROM child WHERE id = ?').run(r.int(1, 30)) },
  ],
  shell: (r) =>
    `BEGIN;
     INSERT INTO items (id, val, n) VALUES (${r.int(1, ITEMS)}, 'shell ${r.int(0, 99)}', ${r.int(0, 9)})
       ON CONFLICT (id) DO UPDATE SET val = excluded.val, n = excluded.n;
     UPDATE OR IGNORE items SET id = ${r.int(1, ITEMS)} WHERE id = ${r.int(1, ITEMS)};
     DELETE FROM pairs WHERE a = 'x' AND b = ${r.int(1, 6)};
     INSERT INTO notes (body, n) VALUES ('from the shell', 1);
     COMMIT;`,
};

convergenceSuite('random workload, shards 4', general, 4, [1, 20240611], 900);

// UNIQUE collisions on a column other than the key: which row keeps a value is decided by
// versions (the newer row keeps it, the older is displaced and comes back once the value is
// free), so every node ends the same whatever the order in which its shards deliver them.
const ACCOUNTS = 12;
const EMAILS = ['a@x', 'b@x', 'c@x', 'd@x', 'e@x', 'f@x'];
const unique: Workload = {
  schema: `
    CREATE TABLE accounts (id INTEGER PRIMARY KEY, email TEXT NOT NULL UNIQUE, v INTEGER);
    CREATE TABLE slots (
      day INTEGER NOT NULL, slot INTEGER NOT NULL, owner TEXT, note TEXT,
      PRIMARY KEY (day, slot), UNIQUE (owner, day)
    ) WITHOUT ROWID;
    CREATE TABLE members (id INTEGER PRIMARY KEY, email TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
    CREATE UNIQUE INDEX members_live_email ON members (lower(email)) WHERE deleted = 0;
  `,
  tables: ['accounts', 'slots', 'members'],
  ops: [
    {
      weight: 4,
      run: (db, r) =>
        db
          .prepare('INSERT INTO accounts (id, email, v) VALUES (?, ?, ?)')
          .run(r.int(1, ACCOUNTS), r.pick(EMAILS), r.int(0, 99)),
    },
    {
      // The application's INSERT OR REPLACE removes the row holding the email without a trigger.
      weight: 2,
      run: (db, r) =>
        db
          .prepare('INSERT OR REPLACE INTO accounts (id, email, v) VALUES (?, ?, ?)')
          .run(r.int(1, ACCOUNTS), r.pick(EMAILS), r.int(0, 99)),
    },
    {
      weight: 3,
      run: (db, r) =>
        db
          .prepare(
            'INSERT INTO accounts (id, email, v) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET email = excluded.email, v = excluded.v',
          )
          .run(r.int(1, ACCOUNTS), r.pick(EMAILS), r.int(0, 99)),
    },
    {
      weight: 4,
      run: (db, r) =>
        db.prepare('UPDATE accounts SET email = ? WHERE id = ?').run(r.pick(EMAILS), r.int(1, ACCOUNTS)),
    },
    {
      weight: 2,
      run: (db, r) =>
        db.prepare('UPDATE accounts SET id = ? WHERE id = ?').run(r.int(1, ACCOUNTS), r.int(1, ACCOUNTS)),
    },
    {
      weight: 2,
      run: (db, r) => db.prepare('UPDATE accounts SET v = v + 1 WHERE id = ?').run(r.int(1, ACCOUNTS)),
    },
    { weight: 3, run: (db, r) => db.prepare('DELETE FROM accounts WHERE id = ?').run(r.int(1, ACCOUNTS)) },
    {
      weight: 3,
      run: (db, r) =>
        db
          .prepare(
            'INSERT INTO slots (day, slot, owner, note) VALUES (?, ?, ?, ?) ON CONFLICT (day, slot) DO UPDATE SET owner = excluded.owner',
          )
          .run(r.int(1, 3), r.int(1, 4), r.chance(0.2) ? null : r.pick(['ann', 'ben', 'cat']), r.text()),
    },
    {
      weight: 2,
      run: (db, r) =>
        db
          .prepare('UPDATE slots SET slot = ? WHERE day = ? AND slot = ?')
          .run(r.int(1, 4), r.int(1, 3), r.int(1, 4)),
    },
    {
      weight: 1,
      run: (db, r) =>
        db.prepare('DELETE FROM slots WHERE day = ? AND slot = ?').run(r.int(1, 3), r.int(1, 4)),
    },
    // A partial expression index (soft deletes, case-insensitive emails).
    {
      weight: 3,
      run: (db, r) =>
        db
          .prepare(
            'INSERT INTO members (id, email, deleted) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET email = excluded.email',
          )
          .run(r.int(1, 8), r.pick(['ann', 'Ann', 'ANN', 'bob', 'Bob']), r.chance(0.3) ? 1 : 0),
    },
    {
      weight: 2,
      run: (db, r) => db.prepare('UPDATE members SET deleted = 1 - deleted WHERE id = ?').run(r.int(1, 8)),
    },
    {
      weight: 1,
      run: (db, r) => db.prepare('UPDATE members SET id = ? WHERE id = ?').run(r.int(1, 8), r.int(1, 8)),
    },
    { weight: 1, run: (db, r) => db.prepare('DELETE FROM members WHERE id = ?').run(r.int(1, 8)) },
  ],
  shell: (r) =>
    `INSERT OR REPLACE INTO accounts (id, email, v) VALUES (${r.int(1, ACCOUNTS)}, '${r.pick(EMAILS)}', -1);`,
};

convergenceSuite('random workload with UNIQUE collisions, shards 1', unique, 1, [7, 99], 600, true);

// The default configuration: no shard_by_table, the colliding rows travel on different shards.
convergenceSuite('random workload with UNIQUE collisions, shards 4', unique, 4, [7, 99, 5], 600, true);
