/**
 * Streaming transforms of snapshot files: checksum, zstd compression and
 * decompression, encryption and decryption (`snapshot-cipher.ts`), each in one
 * pass over the file with bounded buffers, so memory never grows with the
 * database size.
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import xxhash from 'xxhash-wasm';
import { CompressStream, DecompressStream } from 'zstd-napi';
import { createDecryptStream, createEncryptStream, type SnapshotCipherParams } from './snapshot-cipher.ts';

/** Read size: large enough that per-chunk overhead vanishes, small enough to stay cache-friendly. */
const CHUNK_BYTES = 1024 * 1024;

export interface FileDigest {
  /**
   * Checksum of the plain bytes (uncompressed, decrypted): `xxh64:<16 hex>`
   * for new snapshots (several times cheaper than SHA-256, which cost as much
   * as the compression); `sha256:<64 hex>` read from older manifests.
   */
  readonly checksum: string;
  /** Length of the plain bytes. */
  readonly sizeBytes: number;
}

export type ChecksumAlgorithm = 'xxh64' | 'sha256';

const { create64 } = await xxhash();

/** The algorithm a checksum string names (see `FileDigest.checksum`). */
export function checksumAlgorithm(checksum: string): ChecksumAlgorithm {
  return checksum.startsWith('sha256:') ? 'sha256' : 'xxh64';
}

function newHasher(algorithm: ChecksumAlgorithm): { update(b: Buffer): void; digest(): string } {
  if (algorithm === 'sha256') {
    const h = createHash('sha256');
    return { update: (b) => h.update(b), digest: () => `sha256:${h.digest('hex')}` };
  }
  const h = create64();
  return {
    update: (b) => h.update(b),
    digest: () => `xxh64:${h.digest().toString(16).padStart(16, '0')}`,
  };
}

/** A pass-through that hashes and counts what flows through it. */
function digestTap(algorithm: ChecksumAlgorithm): { tap: Transform; result: () => FileDigest } {
  const hash = newHasher(algorithm);
  let sizeBytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      sizeBytes += chunk.length;
      callback(null, chunk);
    },
  });
  return { tap, result: () => ({ checksum: hash.digest(), sizeBytes }) };
}

function signalOption(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal ? { signal } : {};
}

/** Checksum and size of a file. */
export async function digestFile(
  path: string,
  algorithm: ChecksumAlgorithm = 'xxh64',
  signal?: AbortSignal,
): Promise<FileDigest> {
  const hash = newHasher(algorithm);
  let sizeBytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES, ...signalOption(signal) })) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
  }
  return { checksum: hash.digest(), sizeBytes };
}

export interface EncodeOptions {
  /** zstd level (with the frame checksum); undefined = not compressed. */
  readonly compressionLevel?: number | undefined;
  /**
   * zstd's own compression threads. 0 compresses on the calling thread, one
   * chunk after another; 1 or more overlaps compression with reading, hashing
   * and writing, and spreads it over the cores. Default 0.
   */
  readonly compressionWorkers?: number | undefined;
  /** Encrypts after compression (`snapshot-cipher.ts`); undefined = not encrypted. */
  readonly encryption?: SnapshotCipherParams | undefined;
  readonly signal?: AbortSignal | undefined;
}

/**
 * Encodes `src` into `dest` (must not exist) in one read: zstd when
 * `compressionLevel` is set, then encryption when `encryption` is. Returns the
 * digest of `src` and the size of `dest`.
 */
export async function encodeFile(
  src: string,
  dest: string,
  options: EncodeOptions,
): Promise<FileDigest & { encodedBytes: number }> {
  const { tap, result } = digestTap('xxh64');
  let encodedBytes = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      encodedBytes += chunk.length;
      callback(null, chunk);
    },
  });
  const stages: NodeJS.ReadWriteStream[] = [tap];
  if (options.compressionLevel !== undefined)
    stages.push(
      new CompressStream({
        compressionLevel: options.compressionLevel,
        checksumFlag: true,
        nbWorkers: options.compressionWorkers ?? 0,
      }),
    );
  if (options.encryption !== undefined) stages.push(createEncryptStream(options.encryption));
  await pipeline(
    [
      createReadStream(src, { highWaterMark: CHUNK_BYTES }),
      ...stages,
      count,
      createWriteStream(dest, { flags: 'wx' }),
    ],
    signalOption(options.signal),
  );
  return { ...result(), encodedBytes };
}

export interface DecodeOptions {
  readonly compressed: boolean;
  /** Of the checksum to compute; default xxh64. */
  readonly algorithm?: ChecksumAlgorithm | undefined;
  /** The file is encrypted: decrypt it with these. */
  readonly encryption?: SnapshotCipherParams | undefined;
  readonly signal?: AbortSignal | undefined;
}

/**
 * Decodes `src` into `dest` (decrypts, then decompresses, as `options` say)
 * and returns the digest of the result. A truncated or damaged input rejects
 * (a chunk or the end that fails authentication, a zstd frame cut short or
 * failing its checksum), never yields a silently short file; the caller must
 * discard `dest` then.
 */
export async function decodeFile(src: string, dest: string, options: DecodeOptions): Promise<FileDigest> {
  const { tap, result } = digestTap(options.algorithm ?? 'xxh64');
  const stages: NodeJS.ReadWriteStream[] = [];
  if (options.encryption !== undefined) stages.push(createDecryptStream(options.encryption));
  if (options.compressed) stages.push(new DecompressStream());
  await pipeline(
    [
      createReadStream(src, { highWaterMark: CHUNK_BYTES }),
      ...stages,
      tap,
      createWriteStream(dest, { flags: 'w' }),
    ],
    signalOption(options.signal),
  );
  return result();
}
