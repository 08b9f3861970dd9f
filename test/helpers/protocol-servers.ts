/**
 * Real protocol servers for the snapshot-store tests, each a child process on a
 * free loopback port with its data in a fresh temporary directory:
 * - S3: `s3rver` (npm), the only S3 server available here (no Docker, no MinIO).
 *   It checks the access key but not the V4 signature, so a wrong secret alone
 *   is accepted.
 * - WebDAV: `rclone serve webdav` (Debian's rclone).
 * - SFTP with password (and key) auth: `rclone serve sftp`.
 * - SFTP from OpenSSH: a real `sshd` with `internal-sftp`, key auth only (it
 *   authenticates OS users, and the tests must not set a password on one).
 * Readiness is a successful TCP connect, polled; `stop()` ends the child and
 * removes its directory.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { connect, createServer, type Socket } from 'node:net';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { tempDir } from './temp-dir.ts';
import { waitFor } from './wait-for.ts';

export interface RunningServer {
  readonly host: '127.0.0.1';
  readonly port: number;
  /** The directory the server stores its data in. */
  readonly dir: string;
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface S3Server extends RunningServer {
  /** e.g. http://127.0.0.1:PORT */
  readonly endpoint: string;
  readonly accessKey: string;
  readonly secret: string;
  readonly region: string;
}

export interface WebDavServer extends RunningServer {
  /** e.g. http://127.0.0.1:PORT (the served directory is its root) */
  readonly url: string;
  readonly user: string;
  readonly pass: string;
}

export interface SftpServer extends RunningServer {
  readonly user: string;
  /** `sftp://user[:pass]@127.0.0.1:PORT<root>`, where root is "/" (rclone) or `dir` (sshd). */
  readonly url: string;
  /** As `ssh-keygen -lf` prints it: "SHA256:<base64 without padding>". */
  readonly hostKeyFingerprint: string;
  /** A known_hosts file holding just this server's key under `[127.0.0.1]:PORT`. */
  readonly knownHostsPath: string;
}

/** Where a server keeps its objects. */
export interface ServerStorageOptions {
  /**
   * An existing directory to store the objects in instead of a fresh one (a
   * small tmpfs for full-disk tests, say); the caller owns it: `stop()` leaves it.
   */
  readonly storageDir?: string;
}

export interface SshKeyPair {
  readonly privateKeyPath: string;
  readonly publicKeyPath: string;
  /** The `ssh-ed25519 AAAA… comment` line. */
  readonly publicKey: string;
}

const READY_TIMEOUT_MS = 20_000;

/** An S3-compatible server (s3rver) in a child process, so its CPU does not share the test's event loop. */
export async function startS3Server(options: ServerStorageOptions = {}): Promise<S3Server> {
  const data = tempDir('hl-s3rver-');
  const storage = options.storageDir ?? data.path;
  const s3rverUrl = pathToFileURL(createRequire(import.meta.url).resolve('s3rver')).href;
  // s3rver 3.7.1 pipes request bodies into files without listening for write errors, so
  // a full disk (ENOSPC) would kill it; the patch hands such an error to the request, which
  // s3rver then answers as any internal failure (HTTP 500 InternalError).
  const script = `
    const { createRequire } = await import('node:module');
    const fs = createRequire(${JSON.stringify(s3rverUrl)})('fs-extra');
    const createWriteStream = fs.createWriteStream;
    fs.createWriteStream = (...args) => {
      const file = createWriteStream(...args);
      let source;
      file.on('pipe', (s) => (source = s));
      file.on('error', (err) => source?.destroy(err));
      return file;
    };
    const { default: S3rver } = await import(${JSON.stringify(s3rverUrl)});
    const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: ${JSON.stringify(storage)} });
    const { port } = await server.run();
    process.stdout.write(JSON.stringify({ port }) + '\\n');
    process.on('SIGTERM', () => server.close().finally(() => process.exit(0)));
  `;
  const child = spawn(...diesWithParent(process.execPath, ['--input-type=module', '-e', script]), {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = captureOutput(child);
  try {
    const port = await Promise.race([
      waitFor('s3rver to print its port', () => /\{"port":(\d+)\}/.exec(log.text())?.[1], {
        timeoutMs: READY_TIMEOUT_MS,
        seen: () => log.text(),
      }).then(Number),
      exited(child, log),
    ]);
    await waitForTcp(port, child, log);
    return {
      ...running(port, data, child),
      dir: storage,
      endpoint: `http://127.0.0.1:${port}`,
      accessKey: 'S3RVER', // s3rver's built-in account
      secret: 'S3RVER',
      region: 'us-east-1',
    };
  } catch (err) {
    await stopChild(child);
    data.remove();
    throw err;
  }
}

/** `rclone serve webdav` with basic auth, serving a fresh directory as its root. */
export async function startWebDavServer(
  options: { user: string; pass: string } & ServerStorageOptions,
): Promise<WebDavServer> {
  const data = tempDir('hl-webdav-');
  const root = storageRoot(data.path, options);
  const { port, child } = await startOnFreePort(data, (p) => [
    'rclone',
    ['serve', 'webdav', '--addr', `127.0.0.1:${p}`, '--user', options.user, '--pass', options.pass, root],
  ]);
  return {
    ...running(port, data, child),
    dir: root,
    url: `http://127.0.0.1:${port}`,
    user: options.user,
    pass: options.pass,
  };
}

/**
 * `rclone serve sftp` with password auth (and key auth for the keys in
 * `authorizedKeysPath`), serving a fresh directory as "/". rclone offers no
 * posix-rename extension, so stores exercise their fallback rename path here.
 * Writes go through rclone's VFS write cache, then into `dir`.
 */
export async function startSftpServer(
  options: { user: string; pass: string; authorizedKeysPath?: string } & ServerStorageOptions,
): Promise<SftpServer> {
  const data = tempDir('hl-sftp-');
  const root = storageRoot(data.path, options);
  const hostKey = generateSshKeyPair(data.path, 'host_key');
  const keys = options.authorizedKeysPath ? ['--authorized-keys', options.authorizedKeysPath] : [];
  const { port, child } = await startOnFreePort(data, (p) => [
    'rclone',
    [
      'serve',
      'sftp',
      '--addr',
      `127.0.0.1:${p}`,
      '--user',
      options.user,
      '--pass',
      options.pass,
      '--key',
      hostKey.privateKeyPath,
      ...keys,
      // Without a write cache rclone takes only strictly sequential writes, and like
      // OpenSSH's sftp client the stores keep many WRITE requests in flight.
      '--vfs-cache-mode',
      'writes',
      '--vfs-write-back',
      '0s',
      '--cache-dir',
      join(data.path, 'cache'),
      root,
    ],
  ]);
  return {
    ...running(port, data, child),
    dir: root,
    user: options.user,
    url: `sftp://${encodeURIComponent(options.user)}:${encodeURIComponent(options.pass)}@127.0.0.1:${port}/`,
    ...hostKeyFacts(data.path, hostKey, port),
  };
}

/**
 * A real OpenSSH `sshd` (Debian's openssh-server) with `internal-sftp`,
 * accepting the keys in `authorizedKeysPath` for the current OS user. `dir` is
 * a fresh directory; the URL points at it by absolute path.
 * As root, sshd needs its privilege-separation directory /run/sshd, which the
 * Debian service normally creates at boot; it is created here when missing.
 */
export async function startSshdServer(
  options: { authorizedKeysPath: string } & ServerStorageOptions,
): Promise<SftpServer> {
  const data = tempDir('hl-sshd-');
  const root = storageRoot(data.path, options);
  const hostKey = generateSshKeyPair(data.path, 'host_key');
  if (process.getuid?.() === 0 && !existsSync('/run/sshd')) mkdirSync('/run/sshd', { mode: 0o755 });
  const user = userInfo().username;
  const { port, child } = await startOnFreePort(data, (p) => {
    const configPath = join(data.path, 'sshd_config');
    writeFileSync(
      configPath,
      [
        `Port ${p}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey.privateKeyPath}`,
        `PidFile ${join(data.path, 'sshd.pid')}`,
        `AuthorizedKeysFile ${options.authorizedKeysPath}`,
        'StrictModes no', // the temp dir's modes are not sshd's business
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'PermitRootLogin prohibit-password',
        `AllowUsers ${user}`,
        'Subsystem sftp internal-sftp',
        'LogLevel VERBOSE',
        '',
      ].join('\n'),
    );
    return ['/usr/sbin/sshd', ['-D', '-e', '-f', configPath]];
  });
  return {
    ...running(port, data, child),
    dir: root,
    user,
    url: `sftp://${encodeURIComponent(user)}@127.0.0.1:${port}${root}`,
    ...hostKeyFacts(data.path, hostKey, port),
  };
}

export interface TcpProxy {
  readonly port: number;
  /** Connections forwarded so far. */
  readonly connections: () => number;
  /** Cuts every open connection (both sides), as a network failure would; new ones are still accepted. */
  dropConnections(): void;
  stop(): Promise<void>;
}

/** A loopback TCP proxy to `targetPort`, for injecting dropped connections between a store and its server. */
export async function startTcpProxy(targetPort: number): Promise<TcpProxy> {
  const open = new Set<Socket>();
  let count = 0;
  const server = createServer((inbound) => {
    count++;
    const outbound = connect({ host: '127.0.0.1', port: targetPort });
    open.add(inbound).add(outbound);
    const end = () => {
      inbound.destroy();
      outbound.destroy();
      open.delete(inbound);
      open.delete(outbound);
    };
    inbound.on('error', end).on('close', end);
    outbound.on('error', end).on('close', end);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || address === null) throw new Error('proxy has no port');
  const dropConnections = () => {
    for (const socket of open) socket.destroy();
    open.clear();
  };
  return {
    port: address.port,
    connections: () => count,
    dropConnections,
    stop: async () => {
      dropConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A fresh unencrypted ed25519 key pair from ssh-keygen, as `<dir>/<name>` and `<dir>/<name>.pub`. */
export function generateSshKeyPair(dir: string, name: string): SshKeyPair {
  const privateKeyPath = join(dir, name);
  execFileSync('ssh-keygen', [
    '-q',
    '-t',
    'ed25519',
    '-N',
    '',
    '-C',
    `hl-test-${name}`,
    '-f',
    privateKeyPath,
  ]);
  const publicKeyPath = `${privateKeyPath}.pub`;
  return { privateKeyPath, publicKeyPath, publicKey: readFileSync(publicKeyPath, 'utf8').trim() };
}

/** A port that was free a moment ago (the caller retries if it is taken meanwhile). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** `storageDir`, or a fresh `<dataDir>/root`. */
function storageRoot(dataDir: string, options: ServerStorageOptions): string {
  if (options.storageDir !== undefined) return options.storageDir;
  const root = join(dataDir, 'root');
  mkdirSync(root);
  return root;
}

/** Fingerprint (computed by ssh-keygen, independently of the code under test) and known_hosts file. */
function hostKeyFacts(dir: string, hostKey: SshKeyPair, port: number) {
  const printed = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', hostKey.publicKeyPath], {
    encoding: 'utf8',
  });
  const hostKeyFingerprint = /SHA256:[A-Za-z0-9+/]+/.exec(printed)?.[0];
  if (!hostKeyFingerprint) throw new Error(`cannot parse ssh-keygen -l output: ${printed}`);
  const [type, blob] = hostKey.publicKey.split(' ');
  const knownHostsPath = join(dir, 'known_hosts');
  writeFileSync(knownHostsPath, `[127.0.0.1]:${port} ${type} ${blob}\n`);
  return { hostKeyFingerprint, knownHostsPath };
}

/**
 * The command wrapped so that the kernel kills it when this process dies
 * (PR_SET_PDEATHSIG through util-linux `setpriv`): a test process killed by a
 * timeout cannot run its exit handlers, and must not leave servers behind.
 */
function diesWithParent(file: string, args: string[]): [string, string[]] {
  return existsSync(SETPRIV) ? [SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args]] : [file, args];
}
const SETPRIV = '/usr/bin/setpriv';

/** Starts `command(port)` on a free port, retrying with another port if the child dies (taken port). */
async function startOnFreePort(
  data: ReturnType<typeof tempDir>,
  command: (port: number) => [string, string[]],
): Promise<{ port: number; child: ChildProcess }> {
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const child = spawn(...diesWithParent(...command(port)), {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RCLONE_CONFIG: join(data.path, 'rclone.conf') },
    });
    const log = captureOutput(child);
    try {
      await waitForTcp(port, child, log);
      return { port, child };
    } catch (err) {
      lastError = err;
      await stopChild(child);
    }
  }
  data.remove();
  throw lastError;
}

async function waitForTcp(port: number, child: ChildProcess, log: { text(): string }): Promise<void> {
  await Promise.race([
    waitFor(`a TCP listener on 127.0.0.1:${port}`, () => canConnect(port), {
      timeoutMs: READY_TIMEOUT_MS,
      seen: () => log.text(),
    }),
    exited(child, log),
  ]);
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Rejects when the child exits (it should not while starting), with the tail of its output. */
function exited(child: ChildProcess, log: { text(): string }): Promise<never> {
  return new Promise((_resolve, reject) => {
    child.once('exit', (code, signal) =>
      reject(new Error(`${child.spawnfile} exited (${code ?? signal}) while starting:\n${log.text()}`)),
    );
    child.once('error', (err) => reject(err));
  });
}

/** Keeps the last 8 KiB of the child's stdout and stderr for failure messages. */
function captureOutput(child: ChildProcess): { text(): string } {
  let text = '';
  const keep = (chunk: Buffer) => {
    text = (text + chunk.toString('utf8')).slice(-8192);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return { text: () => text };
}

function running(port: number, data: ReturnType<typeof tempDir>, child: ChildProcess) {
  // A test process that ends without stopping its servers must not leave them behind.
  const onExit = () => child.kill('SIGKILL');
  process.once('exit', onExit);
  const stop = async () => {
    process.off('exit', onExit);
    await stopChild(child);
    data.remove();
  };
  return { host: '127.0.0.1' as const, port, dir: data.path, stop, [Symbol.asyncDispose]: stop };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await gone;
  clearTimeout(timer);
}
