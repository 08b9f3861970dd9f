import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, open, readFile, readdir, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  type SnapshotObjectInfo,
  type SnapshotStore,
  type SnapshotTransferOptions,
} from '../snapshot-store.ts';
import { downloadStreamToFile, downloadToFile, fsyncPath } from './download-to-file.ts';
import { isListableName, temporaryName } from './object-name.ts';
import { progressCounter } from './progress-counter.ts';
import { DEFAULT_STORE_RETRY } from './retry.ts';
import { objectNotFound, storeConfigError, StoreOperations, type ErrorVerdict } from './store-operation.ts';
import { classifySystemError, systemErrorCode } from './system-error.ts';
import { errorMessage } from '../../error-message.ts';

export interface LocalSnapshotStoreOptions {
  /** Directory holding the objects, one file each; created when missing. */
  readonly path: string;
}

const BACKEND = 'local';
/** Read size of file copies: 1 MiB chunks copy several times faster than the 64 KiB default. */
const COPY_CHUNK_BYTES = 1024 * 1024;

/**
 * Snapshot objects as files in one local directory (or a mounted network
 * share): the reference implementation of the `SnapshotStore` contract.
 * `putFile` and `getFile` hard-link the file when they can, so it must not
 * be modified after the transfer (removing or renaming it is fine).
 * Atomic replace is "write `.<name>.<random>.partial` in the same directory,
 * fsync, rename, fsync the directory": a crash leaves at most a temporary file,
 * which `list()` skips.
 */
export class LocalSnapshotStore implements SnapshotStore {
  readonly description: string;
  readonly #dir: string;
  readonly #ops = new StoreOperations(BACKEND, (err) => this.#classify(err), {
    retry: { ...DEFAULT_STORE_RETRY, attempts: 1 }, // a local file system has no transient failures worth waiting for
  });

  constructor(options: LocalSnapshotStoreOptions) {
    if (options.path === '') throw storeConfigError(BACKEND, 'path is empty');
    this.#dir = resolve(options.path);
    this.description = `local directory ${this.#dir}`;
  }

  async open(signal?: AbortSignal): Promise<void> {
    await this.#ops.run('open', signal, async () => {
      await mkdir(this.#dir, { recursive: true });
    });
  }

  async putFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    const { signal, onProgress } = options;
    await this.#ops.runOnObject('put', name, signal, async () => {
      await this.#writeAtomically(name, async (tempPath) => {
        // On the same file system a hard link stores the file without copying a byte
        // (the caller only ever removes its own name); elsewhere, copy it.
        onProgress?.(0);
        signal?.throwIfAborted();
        const linked = await link(localPath, tempPath).then(
          () => true,
          () => false,
        );
        if (linked) {
          onProgress?.((await stat(tempPath)).size);
          signal?.throwIfAborted();
          return;
        }
        await pipeline(
          createReadStream(localPath, { highWaterMark: COPY_CHUNK_BYTES }),
          progressCounter(onProgress),
          createWriteStream(tempPath, { flags: 'wx' }),
          signal ? { signal } : {},
        );
      });
    });
  }

  async getFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    const { signal, onProgress } = options;
    await this.#ops.runOnObject('get', name, signal, async () => {
      const objectPath = join(this.#dir, name);
      // Opened before the download starts, so ENOENT means "no such object",
      // never "the destination directory is missing".
      const source = await open(objectPath, 'r').catch((err: unknown) => {
        throw systemErrorCode(err) === 'ENOENT' ? objectNotFound(BACKEND, name) : err;
      });
      try {
        onProgress?.(0);
        signal?.throwIfAborted();
        // As in putFile: a hard link on the same file system, so the caller must not modify the file.
        const linked = await downloadToFile(localPath, (partPath) => link(objectPath, partPath)).then(
          () => true,
          () => false,
        );
        if (linked) {
          onProgress?.((await source.stat()).size);
          return;
        }
        await downloadStreamToFile(
          localPath,
          source.createReadStream({ highWaterMark: COPY_CHUNK_BYTES }),
          options,
        );
      } finally {
        await source.close();
      }
    });
  }

  async putBytes(name: string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('put', name, signal, async () => {
      await this.#writeAtomically(name, async (tempPath) => {
        await writeFile(tempPath, data, signal ? { flag: 'wx', signal } : { flag: 'wx' });
      });
    });
  }

  async getBytes(name: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return this.#ops.runOnObject('get', name, signal, async () => {
      try {
        return new Uint8Array(await readFile(join(this.#dir, name), signal ? { signal } : {}));
      } catch (err) {
        if (systemErrorCode(err) === 'ENOENT') return undefined;
        throw err;
      }
    });
  }

  async list(signal?: AbortSignal): Promise<SnapshotObjectInfo[]> {
    return this.#ops.run('list', signal, async () => {
      const entries = await readdir(this.#dir, { withFileTypes: true });
      const infos: SnapshotObjectInfo[] = [];
      for (const entry of entries) {
        if (!entry.isFile() || !isListableName(entry.name)) continue;
        signal?.throwIfAborted();
        try {
          const st = await stat(join(this.#dir, entry.name));
          infos.push({ name: entry.name, size: st.size, modified: st.mtime });
        } catch (err) {
          if (systemErrorCode(err) !== 'ENOENT') throw err; // deleted since readdir: not listed
        }
      }
      return infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  async delete(name: string, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('delete', name, signal, async () => {
      try {
        await unlink(join(this.#dir, name));
      } catch (err) {
        if (systemErrorCode(err) !== 'ENOENT') throw err;
      }
    });
  }

  async close(): Promise<void> {
    this.#ops.markClosed();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Fills a fresh temporary file through `fill`, flushes it, renames it to `name`, flushes the directory. */
  async #writeAtomically(name: string, fill: (tempPath: string) => Promise<void>): Promise<void> {
    const tempPath = join(this.#dir, temporaryName(name));
    try {
      await fill(tempPath);
      await fsyncPath(tempPath, 'r+');
      await rename(tempPath, join(this.#dir, name));
    } catch (err) {
      await rm(tempPath, { force: true }).catch(() => {});
      throw err;
    }
    // Makes the rename itself durable; some file systems refuse fsync on a directory.
    await fsyncPath(this.#dir, 'r').catch(() => {});
  }

  #classify(err: unknown): ErrorVerdict {
    const system = classifySystemError(err, this.#dir);
    if (system) return system;
    const message = errorMessage(err);
    return { code: 'ERR_SNAPSHOT_STORE', detail: message, transient: false };
  }
}
