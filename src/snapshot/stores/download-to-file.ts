import { createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { progressCounter } from './progress-counter.ts';

/**
 * Lands a download atomically: `write` fills `localPath + ".part"`, which is
 * then renamed over `localPath`, so `localPath` is either untouched or
 * complete. Not flushed to disk: a download is a scratch file that is
 * verified and consumed at once, and a crash restarts the restore anyway
 * (flushing cost as much as the download itself). On any failure the ".part"
 * file is removed and the error rethrown.
 */
export async function downloadToFile(
  localPath: string,
  write: (partPath: string) => Promise<void>,
): Promise<void> {
  const partPath = `${localPath}.part`;
  try {
    await write(partPath);
    await rename(partPath, localPath);
  } catch (err) {
    await rm(partPath, { force: true }).catch(() => {});
    throw err;
  }
}

/** `downloadToFile` for a backend that yields the object as a stream. */
export function downloadStreamToFile(
  localPath: string,
  source: Readable,
  options: { signal?: AbortSignal | undefined; onProgress?: ((bytes: number) => void) | undefined },
): Promise<void> {
  return downloadToFile(localPath, (partPath) =>
    pipeline(
      source,
      progressCounter(options.onProgress),
      createWriteStream(partPath),
      options.signal ? { signal: options.signal } : {},
    ),
  );
}

/** Flushes a file (`r+`) or directory (`r`) to stable storage. */
export async function fsyncPath(path: string, flags: 'r' | 'r+'): Promise<void> {
  const handle = await open(path, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
