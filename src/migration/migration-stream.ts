/**
 * The cluster-wide migration stream: `<stream_prefix>-migrations` on subject
 * `<subject_prefix>-migrations`. File storage, every message kept (never
 * discarded: a node that was down for a year still finds every migration it
 * missed), de-duplicated by content hash within the duplicate window.
 */
import {
  DiscardPolicy,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { migrationStream, migrationSubject } from '../nats/naming.ts';
import {
  decodeMigration,
  encodeMigration,
  migrationMsgId,
  type Migration,
  type MigrationMessage,
} from './migration-message.ts';

export interface MigrationStreamSettings {
  readonly streamPrefix: string;
  readonly subjectPrefix: string;
  readonly replicas: number;
  readonly duplicateWindowMs: number;
}

export async function ensureMigrationStream(
  jsm: JetStreamManager,
  s: MigrationStreamSettings,
): Promise<void> {
  const name = migrationStream(s.streamPrefix);
  try {
    await jsm.streams.info(name);
    return;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  await jsm.streams.add({
    name,
    subjects: [migrationSubject(s.subjectPrefix)],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    max_msgs: -1,
    num_replicas: s.replicas,
    duplicate_window: nanos(s.duplicateWindowMs),
    allow_direct: true,
  });
}

/** Stream not found (10059) or no message at that sequence (10037). */
function isNotFound(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === 10059 || err.code === 10037);
}

/** Highest sequence stored (0: none), and the first. */
export async function migrationStreamState(
  jsm: JetStreamManager,
  streamPrefix: string,
): Promise<{ firstSeq: number; lastSeq: number }> {
  const info = await jsm.streams.info(migrationStream(streamPrefix));
  return { firstSeq: info.state.first_seq, lastSeq: info.state.last_seq };
}

/**
 * The message at `seq`: a migration, 'undecodable' (someone else published on the
 * subject), or 'missing' (deleted from the stream by hand).
 */
export async function readMigration(
  jsm: JetStreamManager,
  streamPrefix: string,
  seq: number,
): Promise<Migration | 'undecodable' | 'missing'> {
  let msg;
  try {
    msg = await jsm.streams.getMessage(migrationStream(streamPrefix), { seq });
  } catch (err) {
    if (isNotFound(err)) return 'missing';
    throw err;
  }
  if (msg === null) return 'missing';
  return decodeMigration(seq, msg.data) ?? 'undecodable';
}

/** Every migration in the stream, in order. */
export async function readAllMigrations(jsm: JetStreamManager, streamPrefix: string): Promise<Migration[]> {
  const { firstSeq, lastSeq } = await migrationStreamState(jsm, streamPrefix);
  const out: Migration[] = [];
  for (let seq = Math.max(1, firstSeq); seq <= lastSeq; seq++) {
    const m = await readMigration(jsm, streamPrefix, seq);
    if (typeof m !== 'string') out.push(m);
  }
  return out;
}

/** Publishes a migration; returns its sequence (the stored one when JetStream found it a duplicate). */
export async function publishMigration(
  js: JetStreamClient,
  subjectPrefix: string,
  m: MigrationMessage,
): Promise<{ seq: number; duplicate: boolean }> {
  const ack = await js.publish(migrationSubject(subjectPrefix), encodeMigration(m), {
    msgID: migrationMsgId(m.hash),
  });
  return { seq: ack.seq, duplicate: ack.duplicate };
}
