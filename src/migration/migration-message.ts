/**
 * A replicated migration as it travels on the migration stream: JSON, one
 * message per migration file. Pure.
 */
import { createHash } from 'node:crypto';

export interface MigrationMessage {
  /** File name the operator published (for logs and `-status`; the hash identifies it). */
  readonly name: string;
  /** SHA-256 of the file's bytes, hex: the same file published twice is one migration. */
  readonly hash: string;
  /** The file's SQL, run statement by statement in one transaction. */
  readonly sql: string;
  /** Node id of the database the command ran for (0 when it had none yet). */
  readonly publishedBy: number;
  /** Milliseconds since the epoch. */
  readonly publishedAt: number;
}

/** A migration with its version: the stream sequence, which orders migrations on every node. */
export interface Migration extends MigrationMessage {
  readonly seq: number;
}

export function contentHash(sql: string): string {
  return createHash('sha256').update(sql, 'utf8').digest('hex');
}

/** Header used for JetStream's de-duplication: one file published twice inside the window is stored once. */
export function migrationMsgId(hash: string): string {
  return `migration-${hash}`;
}

export function encodeMigration(m: MigrationMessage): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(m));
}

/** The migration in a stream message; undefined for anything that is not one. */
export function decodeMigration(seq: number, data: Uint8Array): Migration | undefined {
  try {
    const v = JSON.parse(new TextDecoder().decode(data)) as Partial<MigrationMessage>;
    if (typeof v.sql !== 'string' || typeof v.hash !== 'string' || typeof v.name !== 'string')
      return undefined;
    return {
      seq,
      name: v.name,
      hash: v.hash,
      sql: v.sql,
      publishedBy: typeof v.publishedBy === 'number' ? v.publishedBy : 0,
      publishedAt: typeof v.publishedAt === 'number' ? v.publishedAt : 0,
    };
  } catch {
    return undefined;
  }
}
