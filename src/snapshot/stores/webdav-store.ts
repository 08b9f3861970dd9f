import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import {
  type SnapshotObjectInfo,
  type SnapshotStore,
  type SnapshotTransferOptions,
} from '../snapshot-store.ts';
import { downloadStreamToFile } from './download-to-file.ts';
import { isListableName, temporaryName } from './object-name.ts';
import { objectNotFound, storeConfigError, StoreOperations, type ErrorVerdict } from './store-operation.ts';
import { classifySystemError } from './system-error.ts';
import { parseMultistatus } from './webdav-multistatus.ts';
import { progressCounter } from './progress-counter.ts';
import { errorMessage } from '../../error-message.ts';

export interface WebDavSnapshotStoreOptions {
  /**
   * HarmonyLite's form: `https://host/base?dir=/x&login=u&secret=p` (http too).
   * Objects live in `<base>/<dir>/`; `dir` is created when missing, the base
   * must exist. Credentials may also be given as `https://u:p@host/base`.
   */
  readonly url: string;
}

const BACKEND = 'webdav';

/** An HTTP answer the store did not expect; classified by status. */
class WebDavStatusError extends Error {
  override readonly name = 'WebDavStatusError';
  constructor(
    readonly method: string,
    readonly status: number,
    statusText: string,
  ) {
    super(`${method} answered HTTP ${status} ${statusText}`.trim());
  }
}

/**
 * Snapshot objects as files in one WebDAV collection, over Node's fetch
 * (file uploads over node:http, see `#putStreamed`).
 * Atomic replace: PUT to `.<name>.<random>.partial` in the same collection, then
 * MOVE onto the name with `Overwrite: T` (a rename on the server). Uploads are
 * streamed from disk with a known Content-Length. Transient failures
 * (connection refused or reset, HTTP 408/429/5xx) are retried with backoff.
 */
export class WebDavSnapshotStore implements SnapshotStore {
  readonly description: string;
  /** `<base>` without a trailing slash, no credentials, no query. */
  readonly #base: string;
  /** Percent-encoded path segments of `dir`. */
  readonly #dirSegments: string[];
  /** `<base>/<dir>/`: the collection holding the objects. */
  readonly #dirUrl: string;
  readonly #authorization: string | undefined;
  readonly #secrets: string[];
  readonly #where: string;
  /** Temporary objects of failed uploads not yet confirmed deleted (see `#putAtomically`). */
  readonly #orphans = new Set<string>();
  readonly #ops: StoreOperations;

  constructor(options: WebDavSnapshotStoreOptions) {
    const config = (detail: string) => storeConfigError(BACKEND, detail);
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw config('url is not a URL (expected https://host/path?dir=/x&login=u&secret=p)');
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw config(`url scheme ${url.protocol} is not http: or https:`);
    }
    const query = url.searchParams;
    const login = query.get('login') ?? decodeURIComponent(url.username);
    const secret = query.get('secret') ?? decodeURIComponent(url.password);
    const dir = query.get('dir') ?? '';
    const segments = dir.split('/').filter((s) => s !== '' && s !== '.');
    if (segments.includes('..')) throw config(`dir ${JSON.stringify(dir)} must not contain ".."`);

    this.#base = `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
    this.#dirSegments = segments.map(encodeURIComponent);
    this.#dirUrl = `${this.#base}/${this.#dirSegments.map((s) => `${s}/`).join('')}`;
    this.#where = url.host;
    this.#secrets = [secret];
    this.#authorization =
      login === '' && secret === ''
        ? undefined
        : `Basic ${Buffer.from(`${login}:${secret}`).toString('base64')}`;
    this.description = `webdav ${this.#dirUrl}`;
    this.#ops = new StoreOperations(BACKEND, (err) => this.#classify(err), { secrets: this.#secrets });
  }

  async open(signal?: AbortSignal): Promise<void> {
    await this.#ops.run('open', signal, async () => {
      const found = await this.#request('PROPFIND', this.#dirUrl, { signal, headers: { Depth: '0' } });
      await found.body?.cancel();
      if (found.status === 207 || found.status === 200) return;
      if (found.status !== 404 && found.status !== 409) throw statusError('PROPFIND', found);
      // Create dir level by level; the base itself must exist (it is often a fixed server root).
      let url = `${this.#base}/`;
      for (const segment of this.#dirSegments) {
        url += `${segment}/`;
        const made = await this.#request('MKCOL', url, { signal });
        await made.body?.cancel();
        // 405: already exists (RFC 4918 §9.3.1)
        if (made.status !== 201 && made.status !== 200 && made.status !== 405)
          throw statusError('MKCOL', made);
      }
    });
  }

  async putFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    const { signal, onProgress } = options;
    await this.#ops.runOnObject('put', name, signal, () =>
      this.#putAtomically(
        name,
        (tempUrl) => this.#putStreamed(tempUrl, localPath, signal, onProgress),
        signal,
      ),
    );
  }

  async getFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    await this.#ops.runOnObject('get', name, options.signal, async () => {
      const response = await this.#request('GET', this.#objectUrl(name), { signal: options.signal });
      if (response.status === 404) {
        await response.body?.cancel();
        throw objectNotFound(BACKEND, name);
      }
      if (response.status !== 200 || response.body === null) throw statusError('GET', response);
      await downloadStreamToFile(
        localPath,
        Readable.fromWeb(response.body as WebReadableStream<Uint8Array>),
        options,
      );
    });
  }

  async putBytes(name: string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    const put = async (tempUrl: string) => {
      const response = await this.#request('PUT', tempUrl, {
        signal,
        body: data,
        headers: { 'Content-Type': 'application/octet-stream' },
      });
      await response.body?.cancel();
      return { status: response.status, statusText: response.statusText };
    };
    await this.#ops.runOnObject('put', name, signal, () => this.#putAtomically(name, put, signal));
  }

  async getBytes(name: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return this.#ops.runOnObject('get', name, signal, async () => {
      const response = await this.#request('GET', this.#objectUrl(name), { signal });
      if (response.status === 404) {
        await response.body?.cancel();
        return undefined;
      }
      if (response.status !== 200) throw statusError('GET', response);
      return new Uint8Array(await response.arrayBuffer());
    });
  }

  async list(signal?: AbortSignal): Promise<SnapshotObjectInfo[]> {
    return this.#ops.run('list', signal, async () => {
      const response = await this.#request('PROPFIND', this.#dirUrl, {
        signal,
        headers: { Depth: '1', 'Content-Type': 'application/xml; charset=utf-8' },
        body: PROPFIND_BODY,
      });
      if (response.status !== 207) throw statusError('PROPFIND', response);
      const infos: SnapshotObjectInfo[] = [];
      for (const entry of parseMultistatus(await response.text())) {
        if (entry.isCollection) continue; // the collection itself and subdirectories
        const path = new URL(entry.href, this.#dirUrl).pathname;
        const name = decodeURIComponent(path.slice(path.lastIndexOf('/') + 1));
        if (!isListableName(name)) continue;
        infos.push({ name, size: entry.size ?? 0, modified: entry.modified ?? new Date(0) });
      }
      return infos.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  async delete(name: string, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('delete', name, signal, async () => {
      const response = await this.#request('DELETE', this.#objectUrl(name), { signal });
      await response.body?.cancel();
      if (response.status !== 204 && response.status !== 200 && response.status !== 404) {
        throw statusError('DELETE', response);
      }
    });
  }

  async close(): Promise<void> {
    this.#ops.markClosed(); // fetch and node:http pool connections globally: nothing of ours to release
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** `put` to a fresh temporary name, MOVE it onto `name`; on failure remove the temporary object. */
  async #putAtomically(
    name: string,
    put: (tempUrl: string) => Promise<{ status: number; statusText: string }>,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const tempUrl = this.#objectUrl(temporaryName(name));
    try {
      const stored = await put(tempUrl);
      if (stored.status !== 201 && stored.status !== 204 && stored.status !== 200) {
        throw new WebDavStatusError('PUT', stored.status, stored.statusText);
      }
      const moved = await this.#request('MOVE', tempUrl, {
        signal,
        headers: { Destination: this.#objectUrl(name), Overwrite: 'T' },
      });
      await moved.body?.cancel();
      if (moved.status !== 201 && moved.status !== 204) throw statusError('MOVE', moved);
    } catch (err) {
      // A server may still be finishing the broken PUT (and create the file after
      // this DELETE), so the name is kept and deleted again after the next put.
      this.#orphans.add(tempUrl);
      await this.#sweepOrphans({ goneIfMissing: false });
      throw err;
    }
    await this.#sweepOrphans({ goneIfMissing: true });
  }

  /**
   * Best-effort removal of temporary objects of failed uploads, independent of
   * the (maybe aborted) caller's signal; `list()` hides any that remain.
   * Right after the failure a 404 may just mean "not created yet"; after a
   * later successful put it means gone.
   */
  async #sweepOrphans(options: { goneIfMissing: boolean }): Promise<void> {
    for (const url of this.#orphans) {
      try {
        const response = await this.#request('DELETE', url, { signal: AbortSignal.timeout(10_000) });
        await response.body?.cancel();
        const gone =
          response.status === 204 ||
          response.status === 200 ||
          (options.goneIfMissing && response.status === 404);
        if (gone) this.#orphans.delete(url);
      } catch {
        // unreachable now: tried again after the next put
      }
    }
  }

  /**
   * PUT of a local file over node:http(s) with backpressure, not fetch: undici's
   * fetch keeps a streamed request body in memory until the request ends
   * (nodejs/undici#4058; measured here: +270 MB for a 256 MB file).
   * A server may answer (401, 507, …) and close before taking the whole body;
   * its status then wins over the broken pipe.
   */
  async #putStreamed(
    url: string,
    localPath: string,
    signal: AbortSignal | undefined,
    onProgress: ((bytes: number) => void) | undefined,
  ): Promise<{ status: number; statusText: string }> {
    const { size } = await stat(localPath);
    const headers: Record<string, string> = {
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(size),
    };
    if (this.#authorization !== undefined) headers['Authorization'] = this.#authorization;
    const target = new URL(url);
    const request = (target.protocol === 'https:' ? httpsRequest : httpRequest)(target, {
      method: 'PUT',
      headers,
      ...(signal ? { signal } : {}),
    });
    const answered = new Promise<IncomingMessage>((resolve, reject) => {
      request.once('response', resolve);
      request.once('error', reject);
      request.once('close', () => reject(new Error('connection closed before a response')));
    });
    answered.catch(() => {}); // observed below, after the body
    const [sent, response] = await Promise.allSettled([
      pipeline(
        createReadStream(localPath, { highWaterMark: 256 * 1024 }),
        progressCounter(onProgress),
        request,
      ),
      answered,
    ]);
    if (response.status === 'rejected') throw sent.status === 'rejected' ? sent.reason : response.reason;
    const res = response.value;
    res.resume(); // the body of a PUT answer is of no interest; drain it so the connection is reused
    const status = res.statusCode ?? 0;
    if (sent.status === 'rejected' && status < 400) throw sent.reason;
    return { status, statusText: res.statusMessage ?? '' };
  }

  #objectUrl(name: string): string {
    return `${this.#dirUrl}${encodeURIComponent(name)}`;
  }

  #request(
    method: string,
    url: string,
    init: {
      signal: AbortSignal | undefined;
      headers?: Record<string, string>;
      body?: RequestInit['body'];
    },
  ): Promise<Response> {
    const headers: Record<string, string> = { ...init.headers };
    if (this.#authorization !== undefined) headers['Authorization'] = this.#authorization;
    return fetch(url, {
      method,
      headers,
      redirect: 'manual', // a redirect would re-send credentials and cannot replay a streamed body
      ...(init.body !== undefined ? { body: init.body } : {}),
      ...(init.signal ? { signal: init.signal } : {}),
    });
  }

  #classify(err: unknown): ErrorVerdict {
    const system = classifySystemError(err, this.#where);
    if (system) return system;
    if (err instanceof WebDavStatusError) {
      const { status } = err;
      if (status === 401 || status === 403) {
        return {
          code: 'ERR_SNAPSHOT_STORE_AUTH',
          detail: `access denied (check login/secret in the url): ${err.message}`,
          transient: false,
        };
      }
      if (status === 507)
        return {
          code: 'ERR_SNAPSHOT_STORE_NO_SPACE',
          detail: `no space left on the server: ${err.message}`,
          transient: false,
        };
      if (status === 413)
        return {
          code: 'ERR_SNAPSHOT_STORE',
          detail: `object too large for the server: ${err.message}`,
          transient: false,
        };
      if (status === 404 || status === 409) {
        return {
          code: 'ERR_SNAPSHOT_STORE',
          detail: `collection ${this.#dirUrl} missing (was open() called?): ${err.message}`,
          transient: false,
        };
      }
      const transient = status === 408 || status === 429 || status >= 500;
      return { code: 'ERR_SNAPSHOT_STORE', detail: err.message, transient };
    }
    const message = errorMessage(err);
    return { code: 'ERR_SNAPSHOT_STORE', detail: message, transient: false };
  }
}

const PROPFIND_BODY =
  '<?xml version="1.0" encoding="utf-8"?>' +
  '<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>';

function statusError(method: string, response: Response): WebDavStatusError {
  void response.body?.cancel().catch(() => {});
  return new WebDavStatusError(method, response.status, response.statusText);
}
