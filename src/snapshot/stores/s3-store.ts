import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type BucketLocationConstraint,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import {
  type SnapshotObjectInfo,
  type SnapshotStore,
  type SnapshotTransferOptions,
} from '../snapshot-store.ts';
import { downloadStreamToFile } from './download-to-file.ts';
import { isListableName } from './object-name.ts';
import { DEFAULT_STORE_RETRY } from './retry.ts';
import { storeConfigError, StoreOperations, type ErrorVerdict } from './store-operation.ts';
import { classifySystemError } from './system-error.ts';
import { errorMessage } from '../../error-message.ts';

/** The `[snapshot.s3]` settings, plus tuning. Empty strings mean "not set". */
export interface S3SnapshotStoreOptions {
  readonly bucket: string;
  /**
   * "host:port" (HarmonyLite's form; the scheme comes from `useSsl`) or a full
   * URL. Empty: AWS itself, for `region`.
   */
  readonly endpoint?: string;
  /** Key prefix inside the bucket; objects are `<path>/<name>`. Empty: the bucket root. */
  readonly path?: string;
  /**
   * Empty: the AWS SDK's default chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
   * AWS_SESSION_TOKEN, shared config files, instance and container roles).
   */
  readonly accessKey?: string;
  readonly secret?: string;
  readonly sessionToken?: string;
  /** Scheme for an `endpoint` without one. Default true. */
  readonly useSsl?: boolean;
  /** Default "us-east-1" (what S3-compatible servers expect when they do not care). */
  readonly region?: string;
  /** Path-style URLs (`endpoint/bucket/key`), needed by most S3-compatible servers. Default false. */
  readonly forcePathStyle?: boolean;
  /** Multipart part size; memory use is about `partSizeBytes × concurrency`. Default 8 MiB (min 5 MiB). */
  readonly partSizeBytes?: number;
  /** Parts uploaded in parallel. Default 4. */
  readonly concurrency?: number;
  /** Tries per HTTP request (the SDK's own retry with backoff). Default 3. */
  readonly attempts?: number;
}

const BACKEND = 's3';
const MiB = 1024 * 1024;

/**
 * Snapshot objects as S3 objects `<path>/<name>` in one bucket, through
 * @aws-sdk/client-s3. S3 makes every PUT atomic (readers see the old or the
 * new object), so files go straight to their final key: small ones in one PUT,
 * large ones as a multipart upload streamed from disk by lib-storage's
 * `Upload` (a failed or aborted one is aborted server-side, leaving no object).
 * Retries: the SDK retries each request (5xx, throttling, connect errors, with
 * its retry quota); this store retries the whole operation with backoff when
 * the server cannot be reached or a download breaks mid-body.
 */
export class S3SnapshotStore implements SnapshotStore {
  readonly description: string;
  readonly #client: S3Client;
  readonly #bucket: string;
  readonly #prefix: string;
  readonly #region: string;
  readonly #where: string;
  readonly #secrets: string[];
  readonly #partSizeBytes: number;
  readonly #concurrency: number;
  readonly #ops: StoreOperations;

  constructor(options: S3SnapshotStoreOptions) {
    const config = (detail: string) => storeConfigError(BACKEND, detail);
    if (options.bucket === '') throw config('bucket is empty');
    this.#bucket = options.bucket;
    this.#prefix = (options.path ?? '').replace(/^\/+|\/+$/g, '');
    this.#region = options.region || 'us-east-1';
    this.#partSizeBytes = Math.max(5 * MiB, options.partSizeBytes ?? 8 * MiB);
    this.#concurrency = Math.max(1, options.concurrency ?? 4);

    let endpoint: string | undefined;
    if (options.endpoint) {
      endpoint = options.endpoint.includes('://')
        ? options.endpoint
        : `${(options.useSsl ?? true) ? 'https' : 'http'}://${options.endpoint}`;
      let url: URL;
      try {
        url = new URL(endpoint);
      } catch (err) {
        throw config(
          `endpoint ${JSON.stringify(options.endpoint)} is not a URL or host:port (${String(err)})`,
        );
      }
      if (url.username || url.password)
        throw config('endpoint must not contain credentials; use access_key/secret');
      this.#where = url.host;
    } else {
      this.#where = `s3.${this.#region}.amazonaws.com`;
    }

    const accessKey = options.accessKey ?? '';
    const clientConfig: S3ClientConfig = {
      region: this.#region,
      forcePathStyle: options.forcePathStyle ?? false,
      maxAttempts: options.attempts ?? DEFAULT_STORE_RETRY.attempts,
      // Bounded connect so an unreachable endpoint fails in seconds; no overall request
      // timeout, since a part or a download may legitimately take long.
      requestHandler: { connectionTimeout: 5000 },
      // S3-compatible servers (older MinIO, Ceph, s3rver, B2, …) often reject the
      // SDK's default flexible checksums (aws-chunked trailers); the snapshot has
      // its own checksum (design invariant 8), so send them only where S3 requires.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    };
    if (endpoint !== undefined) clientConfig.endpoint = endpoint;
    if (accessKey !== '') {
      clientConfig.credentials = {
        accessKeyId: accessKey,
        secretAccessKey: options.secret ?? '',
        ...(options.sessionToken ? { sessionToken: options.sessionToken } : {}),
      };
    }
    this.#client = new S3Client(clientConfig);
    this.#secrets = [options.secret ?? '', options.sessionToken ?? ''];
    if (accessKey === '') {
      this.#secrets.push(process.env['AWS_SECRET_ACCESS_KEY'] ?? '', process.env['AWS_SESSION_TOKEN'] ?? '');
    }
    const prefix = this.#prefix === '' ? '' : ` prefix ${this.#prefix}/`;
    this.description = `s3 bucket ${this.#bucket}${prefix} at ${endpoint ?? `AWS ${this.#region}`}`;
    this.#ops = new StoreOperations(BACKEND, (err) => this.#classify(err), { secrets: this.#secrets });
  }

  async open(signal?: AbortSignal): Promise<void> {
    await this.#ops.run('open', signal, async () => {
      try {
        await this.#client.send(new HeadBucketCommand({ Bucket: this.#bucket }), abortable(signal));
        return;
      } catch (err) {
        if (httpStatus(err) !== 404) throw err;
      }
      try {
        await this.#client.send(
          new CreateBucketCommand({
            Bucket: this.#bucket,
            // us-east-1 is the one region that refuses an explicit location constraint
            ...(this.#region === 'us-east-1'
              ? {}
              : {
                  CreateBucketConfiguration: { LocationConstraint: this.#region as BucketLocationConstraint },
                }),
          }),
          abortable(signal),
        );
      } catch (err) {
        // Created meanwhile by another node: fine.
        if ((err as Error).name !== 'BucketAlreadyOwnedByYou') throw err;
      }
    });
  }

  async putFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    const { signal, onProgress } = options;
    await this.#ops.runOnObject('put', name, signal, async () => {
      const abortController = new AbortController();
      const upload = new Upload({
        client: this.#client,
        params: { Bucket: this.#bucket, Key: this.#key(name), Body: createReadStream(localPath) },
        partSize: this.#partSizeBytes,
        queueSize: this.#concurrency,
        leavePartsOnError: false,
        abortController,
      });
      if (onProgress) upload.on('httpUploadProgress', (p) => p.loaded !== undefined && onProgress(p.loaded));
      const onAbort = () => abortController.abort(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        await upload.done();
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    });
  }

  async getFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    await this.#ops.runOnObject('get', name, options.signal, async () => {
      const response = await this.#client.send(
        new GetObjectCommand({ Bucket: this.#bucket, Key: this.#key(name) }),
        abortable(options.signal),
      );
      await downloadStreamToFile(localPath, response.Body as Readable, options);
    });
  }

  async putBytes(name: string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('put', name, signal, async () => {
      await this.#client.send(
        new PutObjectCommand({ Bucket: this.#bucket, Key: this.#key(name), Body: data }),
        abortable(signal),
      );
    });
  }

  async getBytes(name: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return this.#ops.runOnObject('get', name, signal, async () => {
      try {
        const response = await this.#client.send(
          new GetObjectCommand({ Bucket: this.#bucket, Key: this.#key(name) }),
          abortable(signal),
        );
        return (await response.Body?.transformToByteArray()) ?? new Uint8Array(0);
      } catch (err) {
        if ((err as Error).name === 'NoSuchKey') return undefined;
        throw err;
      }
    });
  }

  async list(signal?: AbortSignal): Promise<SnapshotObjectInfo[]> {
    return this.#ops.run('list', signal, async () => {
      const keyPrefix = this.#prefix === '' ? '' : `${this.#prefix}/`;
      const infos: SnapshotObjectInfo[] = [];
      let continuationToken: string | undefined;
      do {
        const page = await this.#client.send(
          new ListObjectsV2Command({
            Bucket: this.#bucket,
            Prefix: keyPrefix,
            Delimiter: '/', // objects of this prefix only, not of nested ones
            ...(continuationToken ? { ContinuationToken: continuationToken } : {}),
          }),
          abortable(signal),
        );
        for (const object of page.Contents ?? []) {
          const name = object.Key?.slice(keyPrefix.length) ?? '';
          if (!isListableName(name)) continue;
          infos.push({ name, size: object.Size ?? 0, modified: object.LastModified ?? new Date(0) });
        }
        continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (continuationToken);
      return infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  async delete(name: string, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('delete', name, signal, async () => {
      // S3 answers 204 whether or not the key existed: idempotent by itself.
      await this.#client.send(
        new DeleteObjectCommand({ Bucket: this.#bucket, Key: this.#key(name) }),
        abortable(signal),
      );
    });
  }

  async close(): Promise<void> {
    if (!this.#ops.markClosed()) return;
    this.#client.destroy();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #key(name: string): string {
    return this.#prefix === '' ? name : `${this.#prefix}/${name}`;
  }

  #classify(err: unknown): ErrorVerdict {
    const system = classifySystemError(err, this.#where);
    // Connect errors and bodies cut off mid-download are retried here with real backoff (the
    // SDK's own connect retries come ~10 ms apart, too quick for a restarting server).
    if (system) return system;
    const name = err instanceof Error ? err.name : 'Error';
    const message = errorMessage(err);
    const status = httpStatus(err);
    if (name === 'CredentialsProviderError') {
      return {
        code: 'ERR_SNAPSHOT_STORE_AUTH',
        detail: 'no credentials (set access_key/secret, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)',
        transient: false,
      };
    }
    if (AUTH_ERRORS.has(name) || status === 401 || status === 403) {
      return {
        code: 'ERR_SNAPSHOT_STORE_AUTH',
        detail: `access denied (check access_key/secret${this.#secrets[1] ? '/session_token' : ''}): ${name}`,
        transient: false,
      };
    }
    if (name === 'NoSuchBucket') {
      return {
        code: 'ERR_SNAPSHOT_STORE',
        detail: `bucket ${this.#bucket} does not exist`,
        transient: false,
      };
    }
    if (name === 'NoSuchKey' || status === 404) {
      return { code: 'ERR_SNAPSHOT_NOT_FOUND', detail: 'no such object', transient: false };
    }
    if (NO_SPACE_ERRORS.has(name) || status === 507) {
      return {
        code: 'ERR_SNAPSHOT_STORE_NO_SPACE',
        detail: `no space left in the bucket: ${name}: ${message}`,
        transient: false,
      };
    }
    if (name === 'TimeoutError') {
      return {
        code: 'ERR_SNAPSHOT_STORE_UNREACHABLE',
        detail: `timed out talking to ${this.#where}`,
        transient: false,
      };
    }
    return { code: 'ERR_SNAPSHOT_STORE', detail: `${name}: ${message}`, transient: false };
  }
}

const AUTH_ERRORS = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
]);

const NO_SPACE_ERRORS = new Set(['XMinioStorageFull', 'InsufficientStorage', 'QuotaExceeded', 'StorageFull']);

/** SDK send options for an optional signal (exactOptionalPropertyTypes forbids `abortSignal: undefined`). */
function abortable(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
  return signal ? { abortSignal: signal } : {};
}

function httpStatus(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}
