import { readFileSync } from 'node:fs';
import { posix } from 'node:path';
import type { ConnectConfig, FileEntryWithStats, Stats } from 'ssh2';
import {
  type SnapshotObjectInfo,
  type SnapshotStore,
  type SnapshotTransferOptions,
} from '../snapshot-store.ts';
import { downloadToFile } from './download-to-file.ts';
import { isListableName, temporaryName } from './object-name.ts';
import { openSftpSession, SftpConnectRefusal, sftpCall, type SftpSession } from './sftp-session.ts';
import { downloadFromHandle, uploadToHandle } from './sftp-transfer.ts';
import { objectNotFound, storeConfigError, StoreOperations, type ErrorVerdict } from './store-operation.ts';
import { classifySystemError } from './system-error.ts';
import { verifyHostKey } from './verify-host-key.ts';
import { errorMessage } from '../../error-message.ts';

export interface SftpSnapshotStoreOptions {
  /** `sftp://user[:password]@host[:port]/absolute/dir` (HarmonyLite's form); the dir is created when missing. */
  readonly url: string;
  /**
   * OpenSSH known_hosts file to verify the server's host key against. Default:
   * ~/.ssh/known_hosts when neither this nor `hostFingerprint` is set.
   */
  readonly knownHostsPath?: string;
  /** The server's key fingerprint as `ssh-keygen -lf` prints it: "SHA256:<base64>". */
  readonly hostFingerprint?: string;
  /** Private key file (OpenSSH or PEM format) for key authentication, with or instead of the password. */
  readonly privateKeyPath?: string;
  readonly privateKeyPassphrase?: string;
  /** Accept any host key (HarmonyLite's behaviour). Opt-in only: a man in the middle gets the snapshots. */
  readonly insecureIgnoreHostKey?: boolean;
  /** SSH handshake timeout. Default 10 s. */
  readonly connectTimeoutMs?: number;
  /**
   * Chunks in flight per transfer (see sftp-transfer.ts). Default 32. Use 1 for servers
   * that only take strictly sequential writes (e.g. `rclone serve sftp`
   * without `--vfs-cache-mode writes`).
   */
  readonly concurrency?: number;
}

const BACKEND = 'sftp';

/** SFTP status codes (draft-ietf-secsh-filexfer-02 §7) that ssh2 puts on `err.code`. */
const SFTP_NO_SUCH_FILE = 2;
const SFTP_PERMISSION_DENIED = 3;
const SFTP_FAILURE = 4;
/** Free space below which a bare SSH_FX_FAILURE on a write is taken for a full disk. */
const NEARLY_FULL_BYTES = 1024 * 1024;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;

/**
 * Snapshot objects as files in one directory of an SFTP server, over one SSH
 * connection (ssh2), reconnected on demand after it drops.
 * Host keys are verified (known_hosts or fingerprint) before any credential
 * is sent; an unknown or changed key fails with ERR_SNAPSHOT_STORE_HOST_KEY.
 * Atomic replace: upload `.<name>.<random>.partial`, then `posix-rename@openssh.com`
 * onto the name when the server offers it (OpenSSH does). Without it, plain
 * SFTP rename, and if the server refuses to overwrite, delete then rename:
 * a crash between the two leaves the name absent (never partial); the
 * complete upload is then still in the temporary file.
 */
export class SftpSnapshotStore implements SnapshotStore {
  readonly description: string;
  readonly #host: string;
  readonly #port: number;
  readonly #user: string;
  readonly #password: string;
  readonly #dir: string;
  readonly #options: SftpSnapshotStoreOptions;
  readonly #secrets: string[];
  readonly #transfer: { concurrency?: number };
  #session: Promise<SftpSession> | undefined;
  /** Temporary files a dropped connection kept us from removing; swept on the next connection. */
  readonly #orphans = new Set<string>();
  readonly #ops: StoreOperations<SftpSession>;

  constructor(options: SftpSnapshotStoreOptions) {
    const config = (detail: string) => storeConfigError(BACKEND, detail);
    let url: URL;
    try {
      url = new URL(options.url);
    } catch {
      throw config('url is not a URL (expected sftp://user:password@host:port/path)');
    }
    if (url.protocol !== 'sftp:') throw config(`url scheme ${url.protocol} is not sftp:`);
    if (url.username === '') throw config('url has no user (sftp://user@host/path)');
    if (url.hostname === '') throw config('url has no host');
    this.#host = url.hostname.replace(/^\[(.*)\]$/, '$1'); // IPv6 literal without brackets
    this.#port = url.port === '' ? 22 : Number(url.port);
    this.#user = decodeURIComponent(url.username);
    this.#password = decodeURIComponent(url.password);
    const path = decodeURIComponent(url.pathname);
    if (path.split('/').includes('..')) throw config('path must not contain ".."');
    this.#dir = path === '' ? '.' : posix.normalize(path).replace(/(.)\/+$/, '$1');
    this.#options = options;
    this.#transfer = options.concurrency ? { concurrency: options.concurrency } : {};
    this.#secrets = [this.#password, options.privateKeyPassphrase ?? ''];
    const unverified = options.insecureIgnoreHostKey ? ' (host key NOT verified)' : '';
    const where = this.#dir === '.' ? ' (login directory)' : this.#dir;
    this.description = `sftp ${this.#user}@${url.host}${where}${unverified}`;
    this.#ops = new StoreOperations(BACKEND, (err) => this.#classify(err), {
      secrets: this.#secrets,
      beginAttempt: async () => {
        const session = await this.#connected();
        await this.#sweepOrphans(session);
        return session;
      },
    });
  }

  async open(signal?: AbortSignal): Promise<void> {
    await this.#ops.run('open', signal, async (session) => {
      // mkdir -p, one level at a time (SFTP has no recursive mkdir).
      const parts = this.#dir.split('/');
      for (let i = 1; i <= parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (dir === '' || dir === '.') continue;
        const st = await sftpCall<Stats>(session, (sftp, cb) => sftp.stat(dir, cb)).catch((err: unknown) => {
          if (sftpCode(err) !== SFTP_NO_SUCH_FILE) throw err;
          return undefined;
        });
        if (st === undefined) {
          await sftpCall<void>(session, (sftp, cb) => sftp.mkdir(dir, cb)).catch(async (err: unknown) => {
            // Created meanwhile by another node?
            const again = await sftpCall<Stats>(session, (sftp, cb) => sftp.stat(dir, cb)).catch(
              () => undefined,
            );
            if (again === undefined || (again.mode & S_IFMT) !== S_IFDIR) throw err;
          });
        } else if ((st.mode & S_IFMT) !== S_IFDIR) {
          throw new Error(`${dir} exists and is not a directory`);
        }
      }
    });
  }

  async putFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    await this.#ops.runOnObject('put', name, options.signal, async (session) => {
      await this.#writeAtomically(session, name, async (handle) => {
        await uploadToHandle(session, handle, localPath, { ...options, ...this.#transfer });
      });
    });
  }

  async getFile(name: string, localPath: string, options: SnapshotTransferOptions = {}): Promise<void> {
    await this.#ops.runOnObject('get', name, options.signal, async (session) => {
      const handle = await sftpCall<Buffer>(session, (sftp, cb) =>
        sftp.open(this.#path(name), 'r', cb),
      ).catch((err: unknown) => {
        throw sftpCode(err) === SFTP_NO_SUCH_FILE ? objectNotFound(BACKEND, name) : err;
      });
      try {
        const { size } = await sftpCall<Stats>(session, (sftp, cb) => sftp.fstat(handle, cb));
        await downloadToFile(localPath, (partPath) =>
          downloadFromHandle(session, handle, size, partPath, { ...options, ...this.#transfer }),
        );
      } finally {
        await sftpCall<void>(session, (sftp, cb) => sftp.close(handle, cb)).catch(() => {});
      }
    });
  }

  async putBytes(name: string, data: Uint8Array, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('put', name, signal, async (session) => {
      await this.#writeAtomically(session, name, async (handle) => {
        const buffer = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
        await sftpCall<void>(session, (sftp, cb) => sftp.write(handle, buffer, 0, buffer.length, 0, cb));
      });
    });
  }

  async getBytes(name: string, signal?: AbortSignal): Promise<Uint8Array | undefined> {
    return this.#ops.runOnObject('get', name, signal, async (session) => {
      try {
        return new Uint8Array(
          await sftpCall<Buffer>(session, (sftp, cb) => sftp.readFile(this.#path(name), cb)),
        );
      } catch (err) {
        if (sftpCode(err) === SFTP_NO_SUCH_FILE) return undefined;
        throw err;
      }
    });
  }

  async list(signal?: AbortSignal): Promise<SnapshotObjectInfo[]> {
    return this.#ops.run('list', signal, async (session) => {
      const entries = await sftpCall<FileEntryWithStats[]>(session, (sftp, cb) =>
        sftp.readdir(this.#dir, cb),
      );
      return entries
        .filter((e) => (e.attrs.mode & S_IFMT) === S_IFREG && isListableName(e.filename))
        .map((e) => ({ name: e.filename, size: e.attrs.size, modified: new Date(e.attrs.mtime * 1000) }))
        .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  async delete(name: string, signal?: AbortSignal): Promise<void> {
    await this.#ops.runOnObject('delete', name, signal, async (session) => {
      await sftpCall<void>(session, (sftp, cb) => sftp.unlink(this.#path(name), cb)).catch((err: unknown) => {
        if (sftpCode(err) !== SFTP_NO_SUCH_FILE) throw err;
      });
    });
  }

  async close(): Promise<void> {
    this.#ops.markClosed();
    const session = this.#session;
    this.#session = undefined;
    if (session === undefined) return;
    const { client } = await session.catch(() => ({ client: undefined }));
    if (client === undefined) return;
    await new Promise<void>((resolve) => {
      client.once('close', () => resolve());
      client.end();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #path(name: string): string {
    return posix.join(this.#dir, name);
  }

  /**
   * Writes a fresh temporary file through `fill`, flushes it where the server
   * supports fsync@openssh.com, then moves it onto `name`. On failure the
   * temporary file is removed (best effort: the connection may be gone).
   */
  async #writeAtomically(
    session: SftpSession,
    name: string,
    fill: (handle: Buffer) => Promise<void>,
  ): Promise<void> {
    const tempPath = this.#path(temporaryName(name));
    try {
      const handle = await sftpCall<Buffer>(session, (sftp, cb) => sftp.open(tempPath, 'w', cb));
      try {
        await fill(handle);
        await optionalExtension(() =>
          sftpCall<void>(session, (sftp, cb) => sftp.ext_openssh_fsync(handle, (err) => cb(err, undefined))),
        );
      } finally {
        await sftpCall<void>(session, (sftp, cb) => sftp.close(handle, cb)).catch(() => {});
      }
      await this.#replace(session, tempPath, this.#path(name));
    } catch (err) {
      const failure = await this.#diagnoseFailure(session, err); // before the unlink frees the space
      await sftpCall<void>(session, (sftp, cb) => sftp.unlink(tempPath, cb)).catch((unlinkErr: unknown) => {
        if (sftpCode(unlinkErr) !== SFTP_NO_SUCH_FILE) this.#orphans.add(tempPath);
      });
      throw failure;
    }
  }

  /**
   * OpenSSH answers a write to a full disk with a bare SSH_FX_FAILURE
   * ("Failure"): when the directory's file system has (almost) no space left
   * (statvfs@openssh.com), the failure becomes a `SftpNoSpaceError`.
   */
  async #diagnoseFailure(session: SftpSession, err: unknown): Promise<unknown> {
    if (sftpCode(err) !== SFTP_FAILURE) return err;
    const fs = await sftpCall<{ f_bavail: unknown; f_frsize: unknown }>(session, (sftp, cb) =>
      sftp.ext_openssh_statvfs(this.#dir, cb),
    ).catch(() => undefined); // not offered by the server, or the connection is gone
    if (fs === undefined) return err;
    const freeBytes = Number(fs.f_bavail) * Number(fs.f_frsize);
    return freeBytes < NEARLY_FULL_BYTES ? new SftpNoSpaceError(err, freeBytes, this.#dir) : err;
  }

  async #replace(session: SftpSession, from: string, to: string): Promise<void> {
    const posixRenamed = await optionalExtension(() =>
      sftpCall<void>(session, (sftp, cb) => sftp.ext_openssh_rename(from, to, cb)),
    );
    if (posixRenamed) return;
    try {
      await sftpCall<void>(session, (sftp, cb) => sftp.rename(from, to, cb));
    } catch {
      // SFTP v3 rename refuses to overwrite on many servers.
      await sftpCall<void>(session, (sftp, cb) => sftp.unlink(to, cb)).catch(() => {});
      await sftpCall<void>(session, (sftp, cb) => sftp.rename(from, to, cb));
    }
  }

  /** The current session, or a new one when there is none or the last one dropped. */
  #connected(): Promise<SftpSession> {
    if (this.#session === undefined) {
      const session = this.#connect();
      this.#session = session;
      const forget = () => {
        if (this.#session === session) this.#session = undefined;
      };
      session.then((s) => s.closed.catch(forget), forget);
    }
    return this.#session;
  }

  #connect(): Promise<SftpSession> {
    const options = this.#options;
    const config: ConnectConfig = {
      host: this.#host,
      port: this.#port,
      username: this.#user,
      readyTimeout: options.connectTimeoutMs ?? 10_000,
      keepaliveInterval: 15_000,
      keepaliveCountMax: 4,
    };
    if (this.#password !== '') config.password = this.#password;
    if (options.privateKeyPath) {
      try {
        config.privateKey = readFileSync(options.privateKeyPath);
      } catch (err) {
        const detail = `cannot read private_key ${options.privateKeyPath}: ${errorMessage(err)}`;
        return Promise.reject(new SftpConnectRefusal('ERR_SNAPSHOT_STORE_CONFIG', detail, err));
      }
      if (options.privateKeyPassphrase) config.passphrase = options.privateKeyPassphrase;
    }
    return openSftpSession(config, (key) => {
      const untrusted = verifyHostKey(key, {
        host: this.#host,
        port: this.#port,
        knownHostsPath: options.knownHostsPath,
        hostFingerprint: options.hostFingerprint,
        insecureIgnoreHostKey: options.insecureIgnoreHostKey,
      });
      return (
        untrusted && new SftpConnectRefusal('ERR_SNAPSHOT_STORE_HOST_KEY', untrusted.reason, untrusted.cause)
      );
    });
  }

  /** Best-effort removal of temporary files left by uploads that lost their connection. */
  async #sweepOrphans(session: SftpSession): Promise<void> {
    for (const path of this.#orphans) {
      this.#orphans.delete(path);
      await sftpCall<void>(session, (sftp, cb) => sftp.unlink(path, cb)).catch(() => {});
    }
  }

  #classify(err: unknown): ErrorVerdict {
    if (err instanceof SftpConnectRefusal)
      return { code: err.storeCode, detail: err.message, transient: false };
    if (err instanceof SftpNoSpaceError)
      return { code: 'ERR_SNAPSHOT_STORE_NO_SPACE', detail: err.message, transient: false };
    const where = `${this.#host}:${this.#port}`;
    const system = classifySystemError(err, where);
    if (system) return system;
    const message = errorMessage(err);
    const level = (err as { level?: unknown } | null)?.level;
    if (level === 'client-authentication') {
      return {
        code: 'ERR_SNAPSHOT_STORE_AUTH',
        detail: `authentication failed for user ${this.#user} (check the password in the url or private_key)`,
        transient: false,
      };
    }
    if (level === 'client-timeout') {
      return {
        code: 'ERR_SNAPSHOT_STORE_UNREACHABLE',
        detail: `no SSH handshake from ${where} (timed out)`,
        transient: true,
      };
    }
    const code = sftpCode(err);
    if (code === SFTP_PERMISSION_DENIED) {
      return { code: 'ERR_SNAPSHOT_STORE_AUTH', detail: `permission denied: ${message}`, transient: false };
    }
    if (/no space|disk full|quota/i.test(message)) {
      return {
        code: 'ERR_SNAPSHOT_STORE_NO_SPACE',
        detail: `no space left on the server: ${message}`,
        transient: false,
      };
    }
    if (code === SFTP_NO_SUCH_FILE) {
      return {
        code: 'ERR_SNAPSHOT_STORE',
        detail: `no such file or directory in ${this.#dir}: ${message}`,
        transient: false,
      };
    }
    // The connection or channel went away mid-operation: reconnect and try again.
    const dropped = /connection closed|not connected|no response|channel (is )?closed|socket/i.test(message);
    return { code: 'ERR_SNAPSHOT_STORE', detail: message, transient: dropped || level === 'client-socket' };
  }
}

/** A failed write on a server whose file system is full (see `#diagnoseFailure`). */
class SftpNoSpaceError extends Error {
  override readonly name = 'SftpNoSpaceError';
  constructor(cause: unknown, freeBytes: number, dir: string) {
    const said = cause instanceof Error ? cause.message : String(cause);
    super(`no space left on the server (${freeBytes} bytes free in ${dir}; it said "${said}")`, { cause });
  }
}

/**
 * Runs an OpenSSH extension request; false when the server does not offer it
 * (ssh2 refuses before sending anything), true when it ran.
 */
async function optionalExtension(run: () => Promise<void>): Promise<boolean> {
  try {
    await run();
    return true;
  } catch (err) {
    if (err instanceof Error && /does not support this extended request/.test(err.message)) return false;
    throw err;
  }
}

function sftpCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}
