/**
 * Origin signatures of change batches: the publishing node signs its batch id
 * (`Nats-Msg-Id`: origin, shard, sequence) and the payload bytes with its
 * Ed25519 key, in a header, so a receiver applies a batch, or lets it move an
 * origin's sequence, only when that origin's key made it (invariant 10: identities
 * cannot be confused). Ed25519 is deterministic: a retried batch carries the same
 * header, and the payload stays byte-identical (invariant 2). Pure.
 */
import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';

/** `<key fingerprint>.<base64 signature>`. */
export const SIGNATURE_HEADER = 'Harmonylite-Sig';

/** DER prefix of an Ed25519 SubjectPublicKeyInfo, followed by the 32 raw key bytes. */
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

/** First 8 bytes of SHA-256 of the raw public key, hex: names a key in headers and the registry. */
export function keyFingerprint(rawPublicKey: Uint8Array): string {
  return createHash('sha256').update(rawPublicKey).digest('hex').slice(0, 16);
}

export function publicKeyFromRaw(raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new RangeError(`an Ed25519 public key has 32 bytes, not ${raw.length}`);
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

export function rawPublicKey(key: KeyObject): Buffer {
  return createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(ED25519_SPKI_PREFIX.length);
}

/** What is signed: the batch id, a NUL, the payload (an id cannot be moved onto other bytes). */
function signedBytes(msgId: string, payload: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from(msgId, 'utf8'), Buffer.alloc(1), payload]);
}

/** The header value for a batch. */
export function signBatch(
  key: { readonly privateKey: KeyObject; readonly fingerprint: string },
  msgId: string,
  payload: Uint8Array,
): string {
  return `${key.fingerprint}.${sign(null, signedBytes(msgId, payload), key.privateKey).toString('base64')}`;
}

/** The fingerprint a header names, or undefined when it is not a signature header. */
export function signatureFingerprint(header: string): string | undefined {
  const dot = header.indexOf('.');
  return dot === 16 && /^[0-9a-f]{16}$/.test(header.slice(0, 16)) ? header.slice(0, 16) : undefined;
}

/** True when `header` is `publicKey`'s signature of this batch id and payload. */
export function verifyBatch(
  publicKey: KeyObject,
  header: string,
  msgId: string,
  payload: Uint8Array,
): boolean {
  const signature = Buffer.from(header.slice(17), 'base64');
  if (signature.length !== 64) return false;
  return verify(null, signedBytes(msgId, payload), publicKey, signature);
}
