/**
 * Streaming authenticated encryption of snapshot files at rest,
 * with node's built-in crypto only. Pure: no I/O, no state beyond a stream.
 *
 * Layout: a 64-byte header, then chunks of `chunkBytes` plaintext bytes (the
 * last one shorter, possibly empty), each stored as ciphertext + 16-byte tag.
 *
 * | offset | bytes | field                                              |
 * |--------|-------|----------------------------------------------------|
 * | 0      | 8     | magic `HLTS-ENC`                                   |
 * | 8      | 1     | format version (1)                                 |
 * | 9      | 1     | algorithm (1 = AES-256-GCM, HKDF-SHA256 file key)  |
 * | 10     | 2     | reserved, zero                                     |
 * | 12     | 4     | plaintext bytes per chunk, big-endian              |
 * | 16     | 8     | key id: first 8 bytes of SHA-256 of the key        |
 * | 24     | 32    | random salt of this file                           |
 * | 56     | 8     | random nonce prefix of this file                   |
 *
 * Decisions (the STREAM construction, as in Tink's AES-GCM-HKDF streaming):
 * - Each file gets its own AES key, HKDF-SHA256(key, salt, info = version
 *   label + `context`), so nonces never repeat across files whatever their
 *   number, and a file decrypts only under the context it was made for (the
 *   snapshot's name and streams: a data object moved under another manifest
 *   fails authentication).
 * - Nonce of chunk i: nonce prefix (8 bytes) + i (4 bytes, big-endian).
 * - AAD of chunk i: the whole header + i (8 bytes) + a final-chunk flag (1
 *   byte). Changing any byte, swapping or reordering chunks fails a tag; a file
 *   cut at a chunk boundary fails because its new last chunk was sealed as
 *   not final; appended bytes fail because the old last chunk was final.
 * - Decryption releases a chunk only after its tag verified. A file cut short
 *   is detected only at its end, so callers must not use the output before
 *   the stream finished without error (the restore writes a temporary file).
 *
 * Memory is bounded by one chunk plus one input buffer, whatever the file size.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { SnapshotError } from './snapshot-error.ts';

const MAGIC = Buffer.from('HLTS-ENC', 'latin1');
const VERSION = 1;
const ALGORITHM_AES_256_GCM = 1;
export const CIPHER_HEADER_BYTES = 64;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const SALT_BYTES = 32;
const NONCE_PREFIX_BYTES = 8;
/** Plaintext bytes per chunk when encrypting: 64 KiB, large enough that the 16-byte tag and per-chunk setup vanish. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024;
/** Bounds accepted when decrypting: a forged header must not make a reader buffer gigabytes. */
const MIN_CHUNK_BYTES = 1024;
const MAX_CHUNK_BYTES = 16 * 1024 * 1024;
/** The nonce holds the chunk index in 4 bytes. */
const MAX_CHUNKS = 2 ** 32;
const HKDF_INFO = 'harmonylite-ts snapshot aes-256-gcm v1';

/** What encrypts or decrypts one file: the 256-bit key and the context the file is bound to. */
export interface SnapshotCipherParams {
  /** 32 bytes. */
  readonly key: Uint8Array;
  /** Binds the file to what it is (the snapshot's name, streams); decryption needs the same string. */
  readonly context: string;
  /** Plaintext bytes per chunk, encryption only. Default `DEFAULT_CHUNK_BYTES`. */
  readonly chunkBytes?: number;
}

/** First 8 bytes of SHA-256 of the key, lowercase hex: names a key in manifests and messages without revealing it. */
export function snapshotKeyId(key: Uint8Array): string {
  return createHash('sha256').update(key).digest().subarray(0, 8).toString('hex');
}

function assertKey(key: Uint8Array): void {
  if (key.byteLength !== KEY_BYTES)
    throw new TypeError(`a snapshot key has ${KEY_BYTES} bytes, not ${key.byteLength}`);
}

function fileKey(key: Uint8Array, salt: Buffer, context: string): Buffer {
  const info = Buffer.concat([
    Buffer.from(HKDF_INFO, 'utf8'),
    Buffer.from([0]),
    Buffer.from(context, 'utf8'),
  ]);
  return Buffer.from(hkdfSync('sha256', key, salt, info, KEY_BYTES));
}

/** Nonce and AAD of each chunk, rewritten in place. */
class ChunkFraming {
  readonly #noncePrefix: Buffer;
  readonly #nonce = Buffer.alloc(12);
  readonly #aad: Buffer;

  constructor(header: Buffer) {
    this.#noncePrefix = header.subarray(56, 64);
    this.#aad = Buffer.alloc(CIPHER_HEADER_BYTES + 9);
    header.copy(this.#aad, 0, 0, CIPHER_HEADER_BYTES);
  }

  nonce(index: number): Buffer {
    this.#noncePrefix.copy(this.#nonce, 0);
    this.#nonce.writeUInt32BE(index, NONCE_PREFIX_BYTES);
    return this.#nonce;
  }

  aad(index: number, final: boolean): Buffer {
    this.#aad.writeBigUInt64BE(BigInt(index), CIPHER_HEADER_BYTES);
    this.#aad[CIPHER_HEADER_BYTES + 8] = final ? 1 : 0;
    return this.#aad;
  }
}

function corrupt(detail: string): SnapshotError {
  return new SnapshotError('ERR_SNAPSHOT_CORRUPT', detail);
}

/** Encrypts a byte stream into the layout above. */
export function createEncryptStream(params: SnapshotCipherParams): Transform {
  assertKey(params.key);
  const chunkBytes = params.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES)
    throw new RangeError(`chunkBytes must be ${MIN_CHUNK_BYTES} to ${MAX_CHUNK_BYTES}, not ${chunkBytes}`);
  const header = Buffer.alloc(CIPHER_HEADER_BYTES);
  MAGIC.copy(header, 0);
  header[8] = VERSION;
  header[9] = ALGORITHM_AES_256_GCM;
  header.writeUInt32BE(chunkBytes, 12);
  Buffer.from(snapshotKeyId(params.key), 'hex').copy(header, 16);
  const salt = randomBytes(SALT_BYTES);
  salt.copy(header, 24);
  randomBytes(NONCE_PREFIX_BYTES).copy(header, 56);
  const key = fileKey(params.key, salt, params.context);
  const framing = new ChunkFraming(header);
  let index = 0;
  let headerSent = false;
  /** Plaintext not sealed yet: at most one chunk, kept until it is known whether it is the last. */
  let pending = Buffer.alloc(0);

  const seal = (stream: Transform, plain: Buffer, final: boolean) => {
    if (index >= MAX_CHUNKS) throw new RangeError('snapshot too large to encrypt (2^32 chunks)');
    const cipher = createCipheriv('aes-256-gcm', key, framing.nonce(index), { authTagLength: TAG_BYTES });
    cipher.setAAD(framing.aad(index, final));
    stream.push(cipher.update(plain));
    cipher.final();
    stream.push(cipher.getAuthTag());
    index++;
  };
  const sendHeader = (stream: Transform) => {
    if (headerSent) return;
    headerSent = true;
    stream.push(header);
  };

  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      try {
        sendHeader(this);
        const data = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        let offset = 0;
        // Strictly more than a chunk left: this one is not the last.
        while (data.length - offset > chunkBytes) {
          seal(this, data.subarray(offset, offset + chunkBytes), false);
          offset += chunkBytes;
        }
        pending = Buffer.from(data.subarray(offset)); // a copy: the input buffer is not ours to keep
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback: TransformCallback) {
      try {
        sendHeader(this);
        seal(this, pending, true);
        pending = Buffer.alloc(0);
        key.fill(0);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}

/** What a header says, for messages and checks before decrypting. */
export interface CipherHeader {
  readonly version: number;
  readonly keyId: string;
  readonly chunkBytes: number;
}

/** Parses the header at the start of `bytes`; rejects with ERR_SNAPSHOT_CORRUPT when it is not one of ours. */
export function parseCipherHeader(bytes: Uint8Array): CipherHeader {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length < CIPHER_HEADER_BYTES)
    throw corrupt(
      `truncated: ${b.length} bytes, shorter than the ${CIPHER_HEADER_BYTES}-byte encryption header`,
    );
  if (!b.subarray(0, 8).equals(MAGIC)) throw corrupt('not an encrypted snapshot (no HLTS-ENC header)');
  const version = b[8]!;
  if (version !== VERSION)
    throw corrupt(
      `encryption format version ${version} is not supported (this build reads version ${VERSION})`,
    );
  if (b[9] !== ALGORITHM_AES_256_GCM) throw corrupt(`unknown encryption algorithm ${b[9]}`);
  if (b[10] !== 0 || b[11] !== 0) throw corrupt('reserved header bytes are not zero');
  const chunkBytes = b.readUInt32BE(12);
  if (chunkBytes < MIN_CHUNK_BYTES || chunkBytes > MAX_CHUNK_BYTES)
    throw corrupt(`chunk size ${chunkBytes} is out of bounds`);
  return { version, keyId: b.subarray(16, 24).toString('hex'), chunkBytes };
}

/**
 * Decrypts the layout above, releasing each chunk once its tag verified.
 * Errors (SnapshotError): `ERR_SNAPSHOT_KEY` when the file was encrypted with
 * another key ("encrypted with key id X, the configured key is Y"),
 * `ERR_SNAPSHOT_CORRUPT` for anything else (not our header, a chunk that
 * fails authentication, a file cut short or extended).
 */
export function createDecryptStream(params: SnapshotCipherParams): Transform {
  assertKey(params.key);
  const ourKeyId = snapshotKeyId(params.key);
  let key: Buffer | undefined;
  let framing: ChunkFraming | undefined;
  let storedChunkBytes = 0;
  let index = 0;
  let pending = Buffer.alloc(0);

  const open = (stream: Transform, stored: Buffer, final: boolean) => {
    if (index >= MAX_CHUNKS) throw corrupt('more than 2^32 chunks');
    const tagAt = stored.length - TAG_BYTES;
    const decipher = createDecipheriv('aes-256-gcm', key!, framing!.nonce(index), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(framing!.aad(index, final));
    decipher.setAuthTag(stored.subarray(tagAt));
    const plain = decipher.update(stored.subarray(0, tagAt));
    try {
      decipher.final();
    } catch {
      throw corrupt(
        final
          ? `the last chunk (${index}) fails authentication: the file was cut short, extended or changed`
          : `chunk ${index} fails authentication: the stored bytes were changed, reordered or belong to another snapshot`,
      );
    }
    stream.push(plain);
    index++;
  };

  return new Transform({
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      try {
        let data = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        if (framing === undefined) {
          if (data.length < CIPHER_HEADER_BYTES) {
            pending = Buffer.from(data);
            return callback();
          }
          const header = parseCipherHeader(data);
          if (header.keyId !== ourKeyId) {
            throw new SnapshotError(
              'ERR_SNAPSHOT_KEY',
              `was encrypted with key id ${header.keyId}, the configured key is ${ourKeyId}`,
            );
          }
          const headerBytes = Buffer.from(data.subarray(0, CIPHER_HEADER_BYTES));
          key = fileKey(params.key, headerBytes.subarray(24, 56), params.context);
          framing = new ChunkFraming(headerBytes);
          storedChunkBytes = header.chunkBytes + TAG_BYTES;
          data = data.subarray(CIPHER_HEADER_BYTES);
        }
        let offset = 0;
        // Strictly more than a stored chunk left: this one is not the last.
        while (data.length - offset > storedChunkBytes) {
          open(this, data.subarray(offset, offset + storedChunkBytes), false);
          offset += storedChunkBytes;
        }
        pending = Buffer.from(data.subarray(offset));
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
    flush(callback: TransformCallback) {
      try {
        if (framing === undefined) {
          // Fewer bytes than a header: say so (or that it is not ours at all).
          parseCipherHeader(pending);
        }
        if (pending.length < TAG_BYTES)
          throw corrupt(`truncated: the data ends inside chunk ${index}, before its authentication tag`);
        open(this, pending, true);
        pending = Buffer.alloc(0);
        key?.fill(0);
        callback();
      } catch (err) {
        callback(err as Error);
      }
    },
  });
}
