import { createHash } from 'node:crypto';
import { open as openFile } from 'node:fs/promises';
import { jetstream, jetstreamManager, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Objm, setSha256Backend, StorageType, type ObjectStore } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  type SnapshotObjectInfo,
  type SnapshotStore,
  type SnapshotTransferOptions,
} from '../snapshot-store.ts';
import { downloadToFile } from './download-to-file.ts';
import { isListableName } from './object-name.ts';
import { objectNotFound, storeConfigError, StoreOperations, type ErrorVerdict } from './store-operation.ts';
import { classifySystemError } from './system-error.ts';
import { errorMessage } from '../../error-message.ts';

export interface NatsObjectSnapshotStoreOptions {
  /** A connection owned by the caller; `close()` leaves it open. */
  readonly nc: NatsConnection;
  /** Object-store bucket (`snapshotBucket()` in nats/naming.ts); letters, digits, `-` and `_`. */
  readonly bucket: string;
  /** Replicas of the bucket's stream when this store creates it (`[snapshot.nats] replicas`). Default 1. */
  readonly replicas?: number;
  /** Chunk size of uploads, capped by the server's max_payload. Default 512 KiB. */
  readonly chunkSizeBytes?: number;
  /** Chunks a download may hold in memory at once. Default 8 (4 MiB with default chunks). */
  readonly downloadWindowChunks?: number;
  /** A download that receives nothing for this long fails (its chunks were purged, or the server is gone). Default 30 s. */
  readonly stallTimeoutMs?: number;
  /**
   * Chunks of uploads that never completed (a killed process) are purged by
   * `open()` once no chunk arrived for this long. Default 1 hour, far beyond
   * the gap between two chunks of a live upload.
   */
  readonly orphanChunkAgeMs?: number;
}

const BACKEND = 'nats';
const KiB = 1024;
const VALID_BUCKET = /^[-\w]+$/;

/**
 * Snapshot objects in a NATS JetStream object store (the default backend),
 * through @nats-io/obj, on the node's own connection. Works with nats-server
 * 2.9 (no stream compression or metadata).
 *
 * Atomic put: the object store writes the chunks under a fresh id and only
 * then the object's metadata message (a subject rollup), so readers see the
 * old object or the complete new one; a failed or aborted put purges its
 * chunks, and a killed one leaves only chunks without metadata, which no
 * reader sees and `open()` purges later.
 * Downloads read the chunks with an ordered consumer that pulls a bounded
 * window (memory does not grow with the object size, unlike the library's
 * `get()`, whose stream has no back-pressure), verify the object's SHA-256
 * digest and size, and land through `.part` + rename.
 */
export class NatsObjectSnapshotStore implements SnapshotStore {
  readonly description: string;
  readonly #options: NatsObjectSnapshotStoreOptions;
  readonly #bucket: string;
  readonly #stream: string;
  #os: ObjectStore | undefined;
  #js: JetStreamClient | undefined;
  #jsm: JetStreamManager | undefined;
  readonly #ops = new StoreOperations(BACKEND, (err) => this.#classify(err));

  constructor(options: NatsObjectSnapshotStoreOptions) {
    if (!VALID_BUCKET.test(options.bucket)) {
      throw storeConfigError(
        BACKEND,
        `bucket ${JSON.stringify(options.bucket)} may hold only letters, digits, "-" and "_"`,
      );
    }
    this.#options = options;
    this.#bucket = options.bucket;
    this.#stream = `OBJ_${options.bucket}`;
    this.description = `nats object store bucket ${options.bucket}`;
  }

  async open(signal?: AbortSignal): Promise<void> {
    await this.#ops.run('open', signal, async () => {
      if (this.#os !== undefined) return;
      // The library hashes every object with a pure-JS SHA-256 by default (~30 MB/s here);
      // Node's native one is an order of magnitude faster. Process-wide and harmless.
      setSha256Backend('native');
      this.#js = jetstream(this.#options.nc);
      this.#jsm = await jetstreamManager(this.#options.nc);
      this.#os = await new Objm(this.#js).create(this.#bucket, {
        replicas: this.#options.replicas ?? 1,
        storage: StorageType.File,
      });
    });
    await this.#purgeOrphanChunks().catch(() => undefined); // housekeeping only
  }

  async putFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    const { signal, onProgress } = options;
    await this.#ops.runOnObject('put', name, signal, async () => {
      const os = this.#store();
      const chunk = this.#chunkSize();
      const file = await openFile(localPath, 'r');
      let sent = 0;
      // Pull-based: the object store reads the next chunk only after the previous one was acknowledged.
      const source = new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (signal?.aborted) {
            controller.error(signal.reason);
            return;
          }
          const buf = Buffer.allocUnsafe(chunk);
          const { bytesRead } = await file.read(buf, 0, chunk, null);
          if (bytesRead === 0) {
            controller.close();
            return;
          }
          sent += bytesRead;
          controller.enqueue(buf.subarray(0, bytesRead));
          onProgress?.(sent);
        },
      });
      try {
        await os.put({ name, options: { max_chunk_size: chunk } }, source);
      } finally {
        await file.close();
      }
      if (sent === 0) onProgress?.(0);
    });
  }

  async getFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    const { signal, onProgress } = options;
    await this.#ops.runOnObject('get', name, signal, async () => {
      const info = await this.#store().info(name);
      if (info === null || info.deleted) throw objectNotFound(BACKEND, name);
      await downloadToFile(localPath, async (partPath) => {
        const file = await openFile(partPath, 'w');
        try {
          const hash = createHash('sha256');
          let received = 0;
          if (info.size > 0) {
            await this.#readChunks(info.nuid, info.size, signal, async (data) => {
              hash.update(data);
              await file.write(data);
              received += data.length;
              onProgress?.(received);
            });
          } else {
            onProgress?.(0);
          }
          if (received !== info.size)
            throw new Error(
              `received ${received} bytes of ${info.size}: the object changed during the download`,
            );
          const want = info.digest.replace(/^SHA-256=/, '').replace(/=+$/, '');
          if (hash.digest('base64url') !== want)
            throw new Error('received data does not match the object digest (SHA-256)');
        } finally {
          await file.close();
        }
      });
    });
  }

  async putBytes(name: string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('put', name, signal, async () => {
      await this.#store().putBlob({ name, options: { max_chunk_size: this.#chunkSize() } }, data);
    });
  }

  async getBytes(name: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return this.#ops.runOnObject('get', name, signal, async () => {
      const blob = await this.#store().getBlob(name);
      // A plain Uint8Array view (the library hands out a Buffer).
      return blob === null ? undefined : new Uint8Array(blob.buffer, blob.byteOffset, blob.byteLength);
    });
  }

  async list(signal?: AbortSignal): Promise<SnapshotObjectInfo[]> {
    return this.#ops.run('list', signal, async () => {
      const infos = await this.#store().list();
      return infos
        .filter((i) => !i.deleted && isListableName(i.name))
        .map((i) => ({ name: i.name, size: i.size, modified: new Date(i.mtime) }))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  async delete(name: string, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('delete', name, signal, async () => {
      const os = this.#store();
      const info = await os.info(name);
      if (info === null || info.deleted) return;
      await os.delete(name);
    });
  }

  async close(): Promise<void> {
    this.#ops.markClosed();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #store(): ObjectStore {
    if (this.#ops.closed) throw new Error('store is closed');
    if (this.#os === undefined) throw new Error('store is not open');
    return this.#os;
  }

  #chunkSize(): number {
    const maxPayload = this.#options.nc.info?.max_payload ?? 1024 * KiB;
    // Headroom under max_payload for the protocol and headers.
    return Math.max(KiB, Math.min(this.#options.chunkSizeBytes ?? 512 * KiB, maxPayload - 4 * KiB));
  }

  /**
   * Streams the chunks of object `nuid` in order through `write` (awaited, so
   * at most a window of chunks is buffered) until `size` bytes arrived.
   * Returns the bytes received; fewer than `size` when the chunks stopped coming.
   */
  async #readChunks(
    nuid: string,
    size: number,
    signal: AbortSignal | undefined,
    write: (data: Uint8Array) => Promise<void>,
  ): Promise<number> {
    const consumer = await this.#js!.consumers.get(this.#stream, {
      filter_subjects: `$O.${this.#bucket}.C.${nuid}`,
    });
    const messages = await consumer.consume({ max_messages: this.#options.downloadWindowChunks ?? 8 });
    const stallMs = this.#options.stallTimeoutMs ?? 30_000;
    let stalled = false;
    let timer = setTimeout(() => {
      stalled = true;
      void messages.close();
    }, stallMs);
    const onAbort = () => void messages.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    let received = 0;
    try {
      for await (const m of messages) {
        clearTimeout(timer);
        await write(m.data);
        received += m.data.length;
        if (received >= size || signal?.aborted) break;
        timer = setTimeout(() => {
          stalled = true;
          void messages.close();
        }, stallMs);
      }
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      await messages.close().catch(() => undefined);
    }
    signal?.throwIfAborted();
    if (stalled && received < size)
      throw new Error(`no data for ${stallMs} ms after ${received} of ${size} bytes`);
    return received;
  }

  /** Purges chunk subjects that no object refers to and that received nothing for `orphanChunkAgeMs`. */
  async #purgeOrphanChunks(): Promise<void> {
    const jsm = this.#jsm!;
    const os = this.#os!;
    const info = await jsm.streams.info(this.#stream, { subjects_filter: `$O.${this.#bucket}.C.>` });
    const subjects = Object.keys(info.state.subjects ?? {});
    if (subjects.length === 0) return;
    const live = new Set((await os.list()).map((o) => o.nuid));
    const ageMs = this.#options.orphanChunkAgeMs ?? 60 * 60 * 1000;
    for (const subject of subjects) {
      const nuid = subject.slice(`$O.${this.#bucket}.C.`.length);
      if (live.has(nuid)) continue;
      const last = await jsm.streams.getMessage(this.#stream, { last_by_subj: subject });
      if (last === null || Date.now() - last.time.getTime() < ageMs) continue;
      // Re-check: an object whose metadata landed meanwhile owns these chunks.
      if ((await os.list()).some((o) => o.nuid === nuid)) continue;
      await jsm.streams.purge(this.#stream, { filter: subject });
    }
  }

  #classify(err: unknown): ErrorVerdict {
    const system = classifySystemError(err, this.description);
    if (system) return system;
    const name = err instanceof Error ? err.name : '';
    const message = errorMessage(err);
    if (this.#ops.closed || /store is (closed|not open)/.test(message))
      return { code: 'ERR_SNAPSHOT_STORE', detail: message, transient: false };
    if (name === 'TimeoutError' || /timeout/i.test(message))
      return {
        code: 'ERR_SNAPSHOT_STORE_UNREACHABLE',
        detail: `no answer from JetStream (${message})`,
        transient: true,
      };
    if (name === 'NoRespondersError' || /no responders|503/i.test(message))
      return {
        code: 'ERR_SNAPSHOT_STORE_UNREACHABLE',
        detail: `JetStream is not available (${message})`,
        transient: true,
      };
    if (name === 'ClosedConnectionError' || /connection (is )?closed|draining/i.test(message))
      return {
        code: 'ERR_SNAPSHOT_STORE_UNREACHABLE',
        detail: `NATS connection closed (${message})`,
        transient: false,
      };
    if (name === 'PermissionViolationError' || /permission|authorization/i.test(message))
      return { code: 'ERR_SNAPSHOT_STORE_AUTH', detail: message, transient: false };
    if (/insufficient (storage )?resources|maximum bytes|max_bytes|storage limit/i.test(message))
      return { code: 'ERR_SNAPSHOT_STORE_NO_SPACE', detail: message, transient: false };
    if (
      /no data for \d+ ms|object changed during the download|does not match the object digest/.test(message)
    )
      return { code: 'ERR_SNAPSHOT_STORE', detail: message, transient: true };
    return { code: 'ERR_SNAPSHOT_STORE', detail: message, transient: false };
  }
}
