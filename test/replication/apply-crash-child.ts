/**
 * Child process of apply-exactly-once.test.ts: applies a batch whose third row
 * hangs inside the apply transaction (a TEMP trigger, visible to this
 * connection only, calls a function that signals the parent and blocks), so
 * the parent can look at the database mid-transaction and then kill -9 this
 * process. Usage: node --import tsx apply-crash-child.ts DB_PATH MARKER_PATH
 */
import { writeFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { BatchApplier } from '../../src/replication/batch-applier.ts';
import { applierOptions, crashBatch } from './apply-messages.ts';

const [dbPath, marker] = process.argv.slice(2);
if (dbPath === undefined || marker === undefined) throw new Error('usage: DB_PATH MARKER_PATH');

const db = new Database(dbPath, { timeout: 5000 });
db.pragma('journal_mode = WAL');
db.pragma('foreign_keys = OFF');
db.function('hang', () => {
  writeFileSync(marker, 'in transaction');
  // Block this thread for good: the parent kills the process here.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  return null;
});
db.exec('CREATE TEMP TRIGGER hang_on_3 AFTER INSERT ON main.items WHEN NEW.id = 3 BEGIN SELECT hang(); END');
const applier = new BatchApplier(db, applierOptions());
applier.apply(1, crashBatch());
writeFileSync(marker, 'committed (the trigger did not hang)');
