/**
 * Streaming transforms of snapshot files: SHA-256, zstd compression and
 * decompression, each in one pass over the file with bounded buffers, so
 * memory never grows with the database size.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CompressStream, DecompressStream } from 'zstd-napi';

/** Read size: large enough that per-chunk overhead vanishes, small enough to stay cache-friendly. */
const CHUNK_BYTES = 1024 * 1024;

export interface FileDigest {
  /** SHA-256 of the uncompressed bytes, lowercase hex. */
  readonly sha256: string;
  /** Length of the uncompressed bytes. */
  readonly sizeBytes: number;
}

/** A pass-through that hashes and counts what flows through it. */
function digestTap(): { tap: Transform; result: () => FileDigest } {
  const hash: Hash = createHash('sha256');
  let sizeBytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      sizeBytes += chunk.length;
      callback(null, chunk);
    },
  });
  return { tap, result: () => ({ sha256: hash.digest('hex'), sizeBytes }) };
}

function signalOption(signal: AbortSignal | undefined): { signal?: AbortSignal } {
  return signal ? { signal } : {};
}

/** SHA-256 and size of a file. */
export async function digestFile(path: string, signal?: AbortSignal): Promise<FileDigest> {
  const hash = createHash('sha256');
  let sizeBytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: CHUNK_BYTES, ...signalOption(signal) })) {
    hash.update(chunk as Buffer);
    sizeBytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), sizeBytes };
}

/** Compresses `src` into `dest` (zstd with its frame checksum) and returns the digest of `src`, in one read. */
export async function compressFile(
  src: string,
  dest: string,
  options: { level: number; signal?: AbortSignal | undefined },
): Promise<FileDigest & { compressedBytes: number }> {
  const { tap, result } = digestTap();
  let compressedBytes = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      compressedBytes += chunk.length;
      callback(null, chunk);
    },
  });
  await pipeline(
    createReadStream(src, { highWaterMark: CHUNK_BYTES }),
    tap,
    new CompressStream({ compressionLevel: options.level, checksumFlag: true }),
    count,
    createWriteStream(dest, { flags: 'wx' }),
    signalOption(options.signal),
  );
  return { ...result(), compressedBytes };
}

/**
 * Decompresses `src` into `dest` and returns the digest of the decompressed
 * bytes. A truncated or damaged input rejects (DecompressStream refuses a
 * frame cut short; the frame checksum catches flipped bits), never yields a
 * silently short file.
 */
export async function decompressFile(src: string, dest: string, signal?: AbortSignal): Promise<FileDigest> {
  const { tap, result } = digestTap();
  await pipeline(
    createReadStream(src, { highWaterMark: CHUNK_BYTES }),
    new DecompressStream(),
    tap,
    createWriteStream(dest, { flags: 'w' }),
    signalOption(signal),
  );
  return result();
}
