/**
 * Invariant 3 at the applier: the same changes, applied in any order, give
 * byte-identical tables. Three simulated origins write random changes (inserts,
 * updates, deletes, key changes, UNIQUE collisions, NULL and NOCASE keys), each
 * versioned by its origin's clock; they are routed to shards by key as the
 * publisher routes them, and every replica interleaves the shards differently,
 * with replays of old messages (a re-published batch, a restored stream). All
 * replicas, at shards 1, 2, 4 and 8, must end with the tables of a reference
 * that applied every change in version order on one shard.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import type { ChangeRecord } from '../../src/codec/change-record.ts';
import type { SqlValue } from '../../src/codec/sql-value.ts';
import { BatchApplier, type InboundMessage } from '../../src/replication/batch-applier.ts';
import { createShardHasher } from '../../src/replication/shard-hasher.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { applierOptions, change, digest, message } from './apply-messages.ts';
import { SeededRandom } from '../fuzz/seeded-random.ts';

const dir = tempDir('hl-converge-versions-');
after(() => dir.remove());

const SCHEMA = `
  CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT);
  CREATE TABLE tags (k TEXT COLLATE NOCASE PRIMARY KEY, n INTEGER) WITHOUT ROWID;
  CREATE TABLE notes (k TEXT PRIMARY KEY, body TEXT);
  CREATE TABLE slots (day INTEGER, slot INTEGER, owner TEXT, PRIMARY KEY (day, slot), UNIQUE (owner, day));
  CREATE TABLE members (id INTEGER PRIMARY KEY, email TEXT NOT NULL, deleted INTEGER NOT NULL DEFAULT 0);
  CREATE UNIQUE INDEX members_live ON members (lower(email)) WHERE deleted = 0;
`;
const TABLES = ['users', 'tags', 'notes', 'slots', 'members'];
const KEYS: Record<string, string[]> = {
  users: ['id'],
  tags: ['k'],
  notes: ['k'],
  slots: ['day', 'slot'],
  members: ['id'],
};

interface Gen {
  readonly table: string;
  readonly type: 'insert' | 'update' | 'delete';
  readonly row: Record<string, SqlValue>;
}

/** One origin's operation: one change, or a key change (a delete of the old key, then the new row). */
function operation(r: SeededRandom): Gen[] {
  const table = r.pick(TABLES);
  const del = r.chance(0.2);
  let row: Record<string, SqlValue>;
  switch (table) {
    case 'users':
      row = {
        id: BigInt(r.int(6) + 1),
        email: r.pick(['a@x', 'b@x', 'c@x', null]),
        name: r.pick(['ann', 'bo', 'cy']),
      };
      break;
    case 'tags':
      row = { k: r.pick(['red', 'Red', 'RED', 'blue', 'Blue']), n: BigInt(r.int(9)) };
      break;
    case 'notes':
      row = { k: r.pick(['n1', 'n2', null]), body: r.pick(['x', 'y', 'z']) };
      break;
    case 'slots':
      row = { day: BigInt(r.int(2)), slot: BigInt(r.int(3)), owner: r.pick(['ann', 'bo', null]) };
      break;
    default:
      row = { id: BigInt(r.int(5) + 1), email: r.pick(['ann', 'Ann', 'bob']), deleted: BigInt(r.int(2)) };
  }
  if (del) return [{ table, type: 'delete', row }];
  if (table === 'users' && r.chance(0.15)) {
    // UPDATE users SET id = ...: logged as the delete of the old key, then the row under the new one.
    const moved = { ...row, id: BigInt(r.int(6) + 1) };
    return [
      { table, type: 'delete', row: { ...row } },
      { table, type: 'update', row: moved },
    ];
  }
  return [{ table, type: r.chance(0.5) ? 'insert' : 'update', row }];
}

interface Versioned {
  readonly record: ChangeRecord;
  readonly origin: number;
  readonly shardKey: readonly SqlValue[];
  readonly table: string;
}

/** Changes of three origins, each with versions from its own clock (clocks skewed, steps interleaved). */
function workload(r: SeededRandom, ops: number): Versioned[] {
  const out: Versioned[] = [];
  const skew = [0, 3, -2];
  for (let step = 0; step < ops; step++) {
    const o = r.int(3);
    const origin = o + 1;
    for (const [i, g] of operation(r).entries()) {
      const version = 1_000_000 + (step + skew[o]!) * 100 + i;
      const key = KEYS[g.table]!.map((k) => g.row[k] ?? null);
      // NOCASE keys route by their folded form, as the publisher does.
      const shardKey =
        g.table === 'tags' ? key.map((v) => (typeof v === 'string' ? v.toLowerCase() : v)) : key;
      out.push({ record: change(g.type, g.table, g.row, origin, version), origin, shardKey, table: g.table });
    }
  }
  return out;
}

/** The stream of each shard: each origin's changes in its own order, origins interleaved at random. */
async function streams(
  r: SeededRandom,
  changes: readonly Versioned[],
  shards: number,
): Promise<ChangeRecord[][][]> {
  const hasher = await createShardHasher(shards);
  const perOrigin = new Map<string, ChangeRecord[][]>();
  for (const c of changes) {
    const shard = hasher(c.table, c.shardKey);
    const k = `${shard}:${c.origin}`;
    let batches = perOrigin.get(k);
    if (batches === undefined) perOrigin.set(k, (batches = []));
    const last = batches[batches.length - 1];
    if (last !== undefined && last.length < 1 + r.int(4)) last.push(c.record);
    else batches.push([c.record]);
  }
  return Array.from({ length: shards }, (_, shard) => {
    const queues = [1, 2, 3].map((o) => [...(perOrigin.get(`${shard}:${o}`) ?? [])]);
    const stream: ChangeRecord[][] = [];
    while (queues.some((q) => q.length > 0)) {
      const q = r.pick(queues.filter((x) => x.length > 0));
      stream.push(q.shift()!);
    }
    return stream;
  });
}

let dbs = 0;
function replica(): { db: Database.Database; applier: BatchApplier } {
  const db = new Database(join(dir.path, `r${++dbs}.db`));
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = OFF');
  db.exec(SCHEMA);
  installCapture(db, new TableFilter([], []), { captureWrites: true, index: { digest, nodeId: 99 } });
  return { db, applier: new BatchApplier(db, applierOptions()) };
}

/** Applies the shard streams in a random interleaving, replaying some old messages as new ones. */
function applyInterleaved(r: SeededRandom, shards: ChangeRecord[][][]): Database.Database {
  const { db, applier } = replica();
  const next = shards.map(() => 0);
  const seq = shards.map(() => 0);
  const seen: ChangeRecord[][][] = shards.map(() => []);
  for (;;) {
    const open = shards.map((_, i) => i).filter((i) => next[i]! < shards[i]!.length);
    if (open.length === 0) break;
    const s = r.pick(open);
    const take = Math.min(1 + r.int(3), shards[s]!.length - next[s]!);
    const batch: InboundMessage[] = [];
    for (let i = 0; i < take; i++) {
      const records = shards[s]![next[s]!++]!;
      seen[s]!.push(records);
      batch.push(message(++seq[s]!, records));
      // A replay: an old message of this shard again, as a new stream message (no batch id to drop it by).
      if (r.chance(0.05)) batch.push(message(++seq[s]!, r.pick(seen[s]!)));
    }
    const res = applier.apply(s + 1, batch);
    assert.deepEqual(res.deadLettered, []);
    assert.equal(res.blocked, undefined, JSON.stringify(res.blocked));
  }
  return db;
}

function dump(db: Database.Database): string {
  return TABLES.map((t) => {
    const rows = db
      .prepare(`SELECT * FROM ${t} ORDER BY ${KEYS[t]!.join(', ')}`)
      .raw(true)
      .all()
      .map((r) => JSON.stringify(r, (_k, v: unknown) => (typeof v === 'bigint' ? `${v}n` : v)));
    return `${t}: ${rows.join(' ')}`;
  }).join('\n');
}

for (const seed of [1, 2, 3, 20261207]) {
  test(`seed ${seed}: replicas at shards 1, 2, 4 and 8, shards interleaved at random, end identical`, async () => {
    const r = new SeededRandom(seed);
    const changes = workload(r, 400);
    // The reference: every change in version order, one at a time.
    const ordered = [...changes].sort(
      (a, b) => a.record.Payload.Version! - b.record.Payload.Version! || a.origin - b.origin,
    );
    const reference = applyInterleaved(r, [ordered.map((c) => [c.record])]);
    const want = dump(reference);
    reference.close();
    assert.match(want, /users: \[/u, 'the workload leaves users rows to compare');
    for (const shards of [1, 2, 4, 8]) {
      for (let i = 0; i < 3; i++) {
        const db = applyInterleaved(r, await streams(r, changes, shards));
        const got = dump(db);
        db.close();
        assert.equal(got, want, `shards ${shards}, interleaving ${i}`);
      }
    }
  });
}
