/**
 * The key that encrypts snapshots at rest (`[snapshot] encryption_key_file`),
 * read from its file by `readKeyFile`, which checks it like the rest of the
 * config. Its bytes never reach a log line.
 */
import { inspect } from 'node:util';
import type { SnapshotConfig } from '../config/config.ts';
import { readKeyFile, SNAPSHOT_KEY_CONFIG } from '../config/key-file.ts';
import { SnapshotError } from './snapshot-error.ts';
import { snapshotKeyId } from './snapshot-cipher.ts';
import type { SnapshotManifest } from './snapshot-manifest.ts';

export class SnapshotKey {
  /** The file it was read from. */
  readonly path: string;
  /** `snapshotKeyId`: first 8 bytes of SHA-256 of the key, hex. */
  readonly id: string;
  readonly #bytes: Uint8Array;

  private constructor(path: string, bytes: Uint8Array) {
    this.path = path;
    this.#bytes = bytes;
    this.id = snapshotKeyId(bytes);
  }

  /** The raw 32 bytes. Never log them. */
  get bytes(): Uint8Array {
    return this.#bytes;
  }

  /** The configured key, or undefined when `encryption_key_file` is "" (snapshots are not encrypted). */
  static fromConfig(snapshot: Pick<SnapshotConfig, 'encryption_key_file'>): SnapshotKey | undefined {
    return snapshot.encryption_key_file === '' ? undefined : SnapshotKey.load(snapshot.encryption_key_file);
  }

  /** Reads and checks a key file; throws ConfigError naming `snapshot.encryption_key_file`. */
  static load(path: string): SnapshotKey {
    return new SnapshotKey(path, readKeyFile(path, SNAPSHOT_KEY_CONFIG));
  }

  /** Key material stays out of logs, JSON and `console.log`. */
  toJSON(): { path: string; id: string } {
    return { path: this.path, id: this.id };
  }

  [inspect.custom](): string {
    return `SnapshotKey { id: ${this.id}, path: ${JSON.stringify(this.path)} }`;
  }
}

/**
 * Why `manifest` cannot be restored with `key` (the configured key, or
 * undefined when none is), or undefined when it can. Checked on the manifest
 * before anything is downloaded; the data's own header is checked again while
 * decrypting. A plain snapshot is refused while a key is configured: with a
 * key, only its holders can make a snapshot this node accepts.
 */
export function snapshotKeyMismatch(
  manifest: SnapshotManifest,
  key: SnapshotKey | undefined,
): SnapshotError | undefined {
  const enc = manifest.encryption;
  if (enc === undefined && key === undefined) return undefined;
  if (enc !== undefined && key !== undefined && enc.keyId === key.id) return undefined;
  const object = manifest.dataObject;
  if (enc === undefined) {
    return new SnapshotError(
      'ERR_SNAPSHOT_KEY',
      `snapshot ${object} is not encrypted, but ${SNAPSHOT_KEY_CONFIG} is set (key id ${key!.id}); an unencrypted snapshot is refused`,
      {
        hint: 'take a new, encrypted snapshot on a node that is up to date (harmonylite -config FILE -save-snapshot), or remove encryption_key_file to restore unencrypted snapshots',
      },
    );
  }
  if (key === undefined) {
    return new SnapshotError(
      'ERR_SNAPSHOT_KEY',
      `snapshot ${object} is encrypted (key id ${enc.keyId}), but no ${SNAPSHOT_KEY_CONFIG} is configured`,
      { hint: `set [snapshot] encryption_key_file to the file of the key with id ${enc.keyId}` },
    );
  }
  return new SnapshotError(
    'ERR_SNAPSHOT_KEY',
    `snapshot ${object} was encrypted with key id ${enc.keyId}, the configured key is ${key.id} (${key.path})`,
    {
      hint: `set [snapshot] encryption_key_file to the key with id ${enc.keyId}, or take a new snapshot with the configured key on a node that is up to date (harmonylite -config FILE -save-snapshot)`,
    },
  );
}
