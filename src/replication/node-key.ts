/**
 * This node's Ed25519 signing key (see batch-signature.ts), generated on first
 * start into a private file next to the database: `<db_path>.node-key`, PEM
 * (PKCS#8), mode 0600. A key file group or others can access is refused.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { inspect } from 'node:util';
import { ConfigError } from '../config/config-error.ts';
import { checkPrivateFile, shownPath } from '../config/private-file.ts';
import { keyFingerprint, rawPublicKey } from './batch-signature.ts';
import { errorMessage } from '../error-message.ts';

export class NodeKey {
  readonly path: string;
  readonly privateKey: KeyObject;
  /** The 32 raw bytes of the public key. */
  readonly publicKey: Buffer;
  readonly fingerprint: string;

  private constructor(path: string, privateKey: KeyObject) {
    this.path = path;
    this.privateKey = privateKey;
    this.publicKey = rawPublicKey(privateKey);
    this.fingerprint = keyFingerprint(this.publicKey);
  }

  static pathFor(dbPath: string): string {
    return `${dbPath}.node-key`;
  }

  /** Reads the key file, or creates it (0600, never overwriting) when it does not exist. */
  static loadOrCreate(path: string): NodeKey {
    try {
      const { privateKey } = generateKeyPairSync('ed25519');
      writeFileSync(path, privateKey.export({ format: 'pem', type: 'pkcs8' }), { flag: 'wx', mode: 0o600 });
      return new NodeKey(path, privateKey);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new ConfigError(`cannot create the node key ${shownPath(path)}: ${errorMessage(err)}`, {
          cause: err,
        });
      }
    }
    checkPrivateFile(path, 'node key');
    try {
      const key = createPrivateKey(readFileSync(path));
      if (key.asymmetricKeyType !== 'ed25519') throw new Error(`a ${key.asymmetricKeyType} key, not Ed25519`);
      return new NodeKey(path, key);
    } catch (err) {
      throw new ConfigError(
        `node key ${shownPath(path)} is not an Ed25519 private key: ${errorMessage(err)}`,
        {
          hint: `move it away; the node generates a new key at its next start`,
          cause: err,
        },
      );
    }
  }

  /** Key material stays out of logs, JSON and `console.log`. */
  toJSON(): { path: string; fingerprint: string } {
    return { path: this.path, fingerprint: this.fingerprint };
  }

  [inspect.custom](): string {
    return `NodeKey { fingerprint: ${this.fingerprint}, path: ${JSON.stringify(this.path)} }`;
  }
}
