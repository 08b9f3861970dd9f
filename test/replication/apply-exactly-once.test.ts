/**
 * Invariant 4 (exactly-once effect of apply) at the applier level, with no
 * NATS: BatchApplier driven directly on a real SQLite file with messages
 * encoded by src/codec, as the shard workers receive them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { installCapture } from '../../src/cdc/capture-installer.ts';
import {
  changeLogTable,
  DEAD_LETTERS,
  ORIGIN_SEQS,
  POSITIONS,
  quoteIdent as q,
  REPLAY_GUARD,
} from '../../src/cdc/names.ts';
import { TableFilter } from '../../src/cdc/table-filter.ts';
import { BatchApplier } from '../../src/replication/batch-applier.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { waitFor } from '../helpers/wait-for.ts';
import { applierOptions, change, crashBatch, message, rawMessage } from './apply-messages.ts';

const SCHEMA = `
  CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT);
  CREATE TABLE tags (k TEXT NOT NULL, n INTEGER NOT NULL, v, PRIMARY KEY (k, n)) WITHOUT ROWID;
`;

interface Fixture {
  readonly dbPath: string;
  readonly db: Database.Database;
  readonly applier: BatchApplier;
  /** A second connection, as an application would open one. */
  readonly app: Database.Database;
  close(): void;
}

function fixture(name: string, dir: string, schema = SCHEMA): Fixture {
  const dbPath = join(dir, `${name}.db`);
  const db = new Database(dbPath);
  db.pragma('journal_mode = WAL');
  db.pragma('foreign_keys = OFF'); // as the shard worker opens it
  db.exec(schema);
  installCapture(db, new TableFilter([], []), { captureWrites: true });
  const app = new Database(dbPath);
  app.defaultSafeIntegers(true);
  return {
    dbPath,
    db,
    app,
    applier: new BatchApplier(db, applierOptions()),
    close() {
      app.close();
      db.close();
    },
  };
}

function rows(f: Fixture, table: string): unknown[] {
  return f.app
    .prepare(`SELECT * FROM ${q(table)} ORDER BY 1, 2`)
    .raw(true)
    .all();
}

function position(f: Fixture, shard: number): bigint | undefined {
  return f.app
    .prepare(`SELECT stream_seq FROM ${q(POSITIONS)} WHERE shard = ?`)
    .pluck()
    .get(shard) as bigint | undefined;
}

function originSeq(f: Fixture, origin: number, shard: number): bigint | undefined {
  return f.app
    .prepare(`SELECT seq FROM ${q(ORIGIN_SEQS)} WHERE origin = ? AND shard = ?`)
    .pluck()
    .get(origin, shard) as bigint | undefined;
}

function count(f: Fixture, table: string): number {
  return Number(
    f.app
      .prepare(`SELECT count(*) FROM ${q(table)}`)
      .pluck()
      .get(),
  );
}

/** Invariant 6 as a side check: replayed rows never reach the change logs, and the guard is never committed. */
function assertNothingCaptured(f: Fixture): void {
  assert.equal(count(f, REPLAY_GUARD), 0, 'the replay guard row is never committed');
  for (const t of ['items', 'tags'])
    assert.equal(count(f, changeLogTable(t)), 0, `${t}: replay not captured`);
}

const dir = tempDir('hl-apply-once-');
after(() => dir.remove());

describe('BatchApplier: exactly-once effect (invariant 4)', () => {
  let f: Fixture;
  before(() => {
    f = fixture('positions', dir.path);
  });
  after(() => f.close());

  test('a message at or below the stored position is skipped', () => {
    const first = f.applier.apply(1, [
      message(1, [change('insert', 'items', { id: 1n, name: 'one' })]),
      message(2, [change('insert', 'items', { id: 2n, name: 'two' })]),
    ]);
    assert.deepEqual(
      { position: first.position, applied: first.appliedMessages, dup: first.duplicates },
      { position: 2, applied: 2, dup: 0 },
    );
    assert.equal(position(f, 1), 2n);
    // Redelivery of 1 and 2 (with other content, to see any effect) and a new message 3.
    const again = f.applier.apply(1, [
      message(1, [change('update', 'items', { id: 1n, name: 'redelivered' })]),
      message(2, [change('delete', 'items', { id: 2n })]),
      message(3, [change('update', 'items', { id: 1n, name: 'three' })]),
    ]);
    assert.deepEqual(
      { position: again.position, applied: again.appliedMessages, dup: again.duplicates },
      { position: 3, applied: 1, dup: 2 },
    );
    assert.deepEqual(rows(f, 'items'), [
      [1n, 'three'],
      [2n, 'two'],
    ]);
    // A batch made only of old messages leaves the position where it is.
    const old = f.applier.apply(1, [message(2, [change('delete', 'items', { id: 1n })])]);
    assert.equal(old.position, 3);
    assert.equal(old.duplicates, 1);
    assert.equal(position(f, 1), 3n);
    assert.equal(f.applier.position(1), 3);
    // Positions are per shard.
    assert.equal(f.applier.position(2), 0);
    assertNothingCaptured(f);
  });

  test('a re-published batch (same Nats-Msg-Id at a later stream position) is skipped, and the position moves past it', () => {
    const r = f.applier.apply(1, [
      message(4, [change('insert', 'items', { id: 10n, name: 'batch 1' })], {
        id: { origin: 7, shard: 1, seq: 1 },
      }),
      message(5, [change('update', 'items', { id: 10n, name: 'batch 2' })], {
        id: { origin: 7, shard: 1, seq: 2 },
      }),
      // Batch 1 again, landing after the duplicate window: must not bring back the older value.
      message(6, [change('insert', 'items', { id: 10n, name: 'batch 1' })], {
        id: { origin: 7, shard: 1, seq: 1 },
      }),
      // Another origin's sequence numbers are independent.
      message(7, [change('insert', 'items', { id: 11n, name: 'origin 8' })], {
        id: { origin: 8, shard: 1, seq: 1 },
      }),
      // Re-published twice in a row, compressed.
      message(8, [change('insert', 'items', { id: 12n, name: 'batch 3' })], {
        id: { origin: 7, shard: 1, seq: 3 },
        compress: true,
      }),
      message(9, [change('insert', 'items', { id: 12n, name: 'batch 3' })], {
        id: { origin: 7, shard: 1, seq: 3 },
        compress: true,
      }),
    ]);
    assert.deepEqual(
      { position: r.position, applied: r.appliedMessages, dup: r.duplicates },
      { position: 9, applied: 4, dup: 2 },
    );
    assert.deepEqual(rows(f, 'items').slice(2), [
      [10n, 'batch 2'],
      [11n, 'origin 8'],
      [12n, 'batch 3'],
    ]);
    assert.equal(originSeq(f, 7, 1), 3n);
    assert.equal(originSeq(f, 8, 1), 1n);
    // In a later transaction too (the origin sequence is read back from the database).
    const later = f.applier.apply(1, [
      message(10, [change('delete', 'items', { id: 10n })], { id: { origin: 7, shard: 1, seq: 2 } }),
    ]);
    assert.equal(later.duplicates, 1);
    assert.equal(later.position, 10);
    assert.equal(rows(f, 'items').length, 5);
    assertNothingCaptured(f);
  });

  test('a dead-lettered message advances the position; the reason and raw bytes are kept', () => {
    const garbage = new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x00, 0x01]);
    const r = f.applier.apply(1, [
      rawMessage(11, garbage, 'not-ours'),
      message(12, [change('insert', 'items', { id: 20n, name: 'after garbage' })]),
      rawMessage(13, new TextEncoder().encode('{"json": "is not cbor"}')),
    ]);
    assert.equal(r.position, 13);
    assert.equal(r.appliedMessages, 1);
    assert.deepEqual(
      r.deadLettered.map((d) => d.seq),
      [11, 13],
    );
    const dead = f.app
      .prepare(
        `SELECT shard, stream_seq, msg_id, reason, payload FROM ${q(DEAD_LETTERS)} ORDER BY stream_seq`,
      )
      .all() as {
      shard: bigint;
      stream_seq: bigint;
      msg_id: string | null;
      reason: string;
      payload: Buffer;
    }[];
    assert.equal(dead.length, 2);
    assert.equal(dead[0]!.stream_seq, 11n);
    assert.equal(dead[0]!.msg_id, 'not-ours');
    assert.ok(dead[0]!.reason.length > 0);
    assert.ok(Buffer.from(garbage).equals(dead[0]!.payload), 'the raw bytes are kept');
    assert.equal(position(f, 1), 13n);
    assert.ok(rows(f, 'items').some((row) => (row as unknown[])[1] === 'after garbage'));
    assertNothingCaptured(f);
  });

  test("a dead-lettered message's Msg-Id is not trusted: it cannot make later batches of that origin look like duplicates", () => {
    assert.equal(originSeq(f, 7, 1), 3n);
    const r = f.applier.apply(1, [
      rawMessage(100, new Uint8Array([0xff, 0x00]), '7-1-999999'),
      message(101, [change('insert', 'items', { id: 40n, name: 'batch 4 of origin 7' })], {
        id: { origin: 7, shard: 1, seq: 4 },
      }),
      // An id naming another shard is not ours: the message applies on its content, and records nothing.
      message(102, [change('insert', 'items', { id: 41n, name: 'misrouted id' })], {
        id: { origin: 7, shard: 2, seq: 999 },
      }),
    ]);
    assert.deepEqual(
      r.deadLettered.map((d) => d.seq),
      [100],
    );
    assert.equal(r.appliedMessages, 2);
    assert.equal(originSeq(f, 7, 1), 4n);
    assert.equal(originSeq(f, 7, 2), undefined);
    assert.ok(rows(f, 'items').some((row) => (row as unknown[])[1] === 'batch 4 of origin 7'));
    assert.ok(rows(f, 'items').some((row) => (row as unknown[])[1] === 'misrouted id'));
    assert.equal(position(f, 1), 102n);
  });

  test('a message waiting for the schema does not advance the position, and applies in order once the schema catches up', () => {
    const r = f.applier.apply(1, [
      message(114, [change('insert', 'items', { id: 30n, name: 'before' })]),
      message(115, [change('insert', 'later', { id: 1n, v: 'first' })], {
        id: { origin: 9, shard: 1, seq: 1 },
      }),
      message(116, [change('update', 'items', { id: 30n, name: 'after' })]),
      message(117, [change('insert', 'later', { id: 1n, v: 'second' })], {
        id: { origin: 9, shard: 1, seq: 2 },
      }),
    ]);
    assert.equal(r.position, 114);
    assert.equal(r.blocked?.seq, 115);
    assert.match(r.blocked?.reason ?? '', /later/);
    assert.equal(position(f, 1), 114n);
    assert.equal(originSeq(f, 9, 1), undefined, 'the blocked batch is not recorded as applied');
    assert.ok(rows(f, 'items').some((row) => (row as unknown[])[1] === 'before'));
    // Asked again (periodic re-check): still waits, nothing after it applies.
    const again = f.applier.apply(1, [
      message(115, [change('insert', 'later', { id: 1n, v: 'first' })], {
        id: { origin: 9, shard: 1, seq: 1 },
      }),
      message(116, [change('update', 'items', { id: 30n, name: 'after' })]),
    ]);
    assert.equal(again.blocked?.seq, 115);
    assert.equal(again.position, 114);
    assert.ok(rows(f, 'items').some((row) => (row as unknown[])[1] === 'before'));

    f.app.exec('CREATE TABLE later (id INTEGER PRIMARY KEY, v TEXT)');
    installCapture(f.db, new TableFilter([], []), { captureWrites: true });
    f.applier.invalidateSchema();
    const resumed = f.applier.apply(1, [
      message(115, [change('insert', 'later', { id: 1n, v: 'first' })], {
        id: { origin: 9, shard: 1, seq: 1 },
      }),
      message(116, [change('update', 'items', { id: 30n, name: 'after' })]),
      message(117, [change('insert', 'later', { id: 1n, v: 'second' })], {
        id: { origin: 9, shard: 1, seq: 2 },
      }),
    ]);
    assert.equal(resumed.blocked, undefined);
    assert.equal(resumed.position, 117);
    assert.equal(resumed.appliedMessages, 3);
    assert.deepEqual(rows(f, 'later'), [[1n, 'second']]);
    assert.ok(rows(f, 'items').some((row) => (row as unknown[])[1] === 'after'));
    assert.equal(originSeq(f, 9, 1), 2n);
    assert.equal(count(f, REPLAY_GUARD), 0);
    assert.equal(count(f, changeLogTable('later')), 0);
  });

  test('an unknown column waits until ALTER TABLE ADD COLUMN; the operator can dead-letter a held message', () => {
    const r = f.applier.apply(1, [
      message(118, [change('insert', 'tags', { k: 'a', n: 1n, v: 'x', extra: 'new column' })]),
      message(119, [change('insert', 'tags', { k: 'b', n: 1n, v: 'y' })]),
    ]);
    assert.equal(r.blocked?.seq, 118);
    assert.match(r.blocked?.reason ?? '', /extra/);
    assert.equal(r.position, 117);
    assert.deepEqual(rows(f, 'tags'), []);

    f.app.exec('ALTER TABLE tags ADD COLUMN extra TEXT');
    installCapture(f.db, new TableFilter([], []), { captureWrites: true });
    // No invalidateSchema(): the periodic re-check alone must see the registry brought up to date.
    const resumed = f.applier.apply(1, [
      message(118, [change('insert', 'tags', { k: 'a', n: 1n, v: 'x', extra: 'new column' })]),
      message(119, [change('insert', 'tags', { k: 'b', n: 1n, v: 'y' })]),
    ]);
    assert.equal(resumed.position, 119);
    assert.deepEqual(rows(f, 'tags'), [
      ['a', 1n, 'x', 'new column'],
      ['b', 1n, 'y', null],
    ]);

    // A schema that never comes: the operator moves the message out of the way.
    const stuck = message(120, [change('insert', 'never_created', { id: 1n })]);
    const next = message(121, [change('insert', 'tags', { k: 'c', n: 1n, v: 'z' })]);
    assert.equal(f.applier.apply(1, [stuck, next]).blocked?.seq, 120);
    f.applier.deadLetter(1, stuck, 'moved by the operator');
    assert.equal(position(f, 1), 120n);
    const after = f.applier.apply(1, [stuck, next]);
    assert.equal(after.blocked, undefined);
    assert.equal(after.position, 121);
    assert.equal(after.duplicates, 1);
    const reason = f.app
      .prepare(`SELECT reason FROM ${q(DEAD_LETTERS)} WHERE stream_seq = 120`)
      .pluck()
      .get() as string;
    assert.equal(reason, 'moved by the operator');
    // Dead-lettering an already-passed message changes nothing.
    f.applier.deadLetter(1, stuck, 'again');
    assert.equal(count(f, DEAD_LETTERS), 4);
  });
});

describe('BatchApplier: rows, positions and origin sequences commit together', () => {
  test('an error midway through the transaction leaves neither rows nor position nor origin sequences', () => {
    const f = fixture('rollback', dir.path);
    try {
      f.applier.apply(1, [message(1, [change('insert', 'items', { id: 100n, name: 'committed' })])]);
      let calls = 0;
      // A transient failure (not a property of the message: an I/O error, say) in the middle of the batch.
      f.db.function('fail_now', () => {
        calls++;
        // Meanwhile, another connection sees neither the guard nor the rows of this transaction.
        assert.equal(count(f, REPLAY_GUARD), 0);
        assert.equal(count(f, 'items'), 1);
        throw new Error('simulated I/O failure');
      });
      f.db.exec(
        'CREATE TEMP TRIGGER fail_on_4 AFTER INSERT ON main.items WHEN NEW.id = 4 BEGIN SELECT fail_now(); END',
      );
      const batch = crashBatch().map((m) => ({ ...m, seq: m.seq + 1 })); // stream positions 2..6
      assert.throws(() => f.applier.apply(1, batch), /simulated I\/O failure/);
      assert.equal(calls, 1);
      assert.deepEqual(rows(f, 'items'), [[100n, 'committed']]);
      assert.equal(position(f, 1), 1n);
      assert.equal(originSeq(f, 7, 1), undefined);
      assert.equal(count(f, DEAD_LETTERS), 0, 'a transient failure is not a dead letter');
      assertNothingCaptured(f);
      // Retried once the cause is gone: everything applies, once.
      f.db.exec('DROP TRIGGER temp.fail_on_4');
      const r = f.applier.apply(1, batch);
      assert.equal(r.position, 6);
      assert.equal(r.appliedMessages, 5);
      assert.equal(rows(f, 'items').length, 6);
      assert.equal(originSeq(f, 7, 1), 5n);
      assertNothingCaptured(f);
    } finally {
      f.close();
    }
  });

  test('kill -9 in the middle of the apply transaction: neither rows nor position survive, and a restart applies them once', async () => {
    const f = fixture('crash', dir.path);
    const marker = join(dir.path, 'crash.marker');
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', new URL('./apply-crash-child.ts', import.meta.url).pathname, f.dbPath, marker],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await waitFor('the child to hang inside its apply transaction', () => existsSync(marker), {
        timeoutMs: 20_000,
        seen: () => stderr,
      });
      // Mid-transaction, from another connection: rows 1 and 2 are written but not visible, nor the guard.
      assert.equal(count(f, 'items'), 0);
      assert.equal(count(f, REPLAY_GUARD), 0);
      assert.equal(position(f, 1), undefined);
      child.kill('SIGKILL');
      await exited;
      assert.equal(child.signalCode, 'SIGKILL');

      assert.equal(count(f, 'items'), 0, 'no row of the killed transaction');
      assert.equal(position(f, 1), undefined, 'no position of the killed transaction');
      assert.equal(originSeq(f, 7, 1), undefined);
      assertNothingCaptured(f);

      // The restarted node replays the same messages from the stored position + 1.
      const applier = new BatchApplier(f.db, applierOptions());
      const r = applier.apply(1, crashBatch());
      assert.equal(r.appliedMessages, 5);
      assert.equal(r.position, 5);
      assert.equal(count(f, 'items'), 5);
      assert.equal(applier.apply(1, crashBatch()).duplicates, 5);
      assert.equal(count(f, 'items'), 5);
      assert.equal(f.db.pragma('integrity_check', { simple: true }), 'ok');
      assertNothingCaptured(f);
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
      f.close();
    }
  });
});
