import { spawn, type ChildProcess } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  constants as fsConstants,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createConnection } from 'node:net';
import { delimiter, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { AuthorizationError, connect } from '@nats-io/transport-node';
import type { NatsConnection, NodeConnectionOptions } from '@nats-io/transport-node';
import type { Logger } from '../logger.ts';
import { isLoopbackAddress } from './route-credentials.ts';
import { configStatements, topLevelBlock } from './server-config-block.ts';
import { recordOwner, takeOverStore, tiedToParent } from './server-lifetime.ts';
import { errorMessage } from '../error-message.ts';

export const NATS_SERVER_ERROR_CODES = [
  'ERR_NATS_SERVER_NOT_FOUND',
  'ERR_NATS_SERVER_CONFIG',
  'ERR_NATS_SERVER_START',
  'ERR_NATS_SERVER_START_TIMEOUT',
  'ERR_NATS_SERVER_STORE_IN_USE',
  'ERR_NATS_SERVER_NOT_RUNNING',
] as const;
export type NatsServerErrorCode = (typeof NATS_SERVER_ERROR_CODES)[number];

/** A failure to find, configure, start or address the embedded nats-server. */
export class NatsServerError extends Error {
  override readonly name = 'NatsServerError';
  readonly code: NatsServerErrorCode;
  /** What the operator can do about it, one line (the CLI prints it as `Try: …`). */
  readonly hint?: string;
  /** The server's last output lines, oldest first (empty when it never ran). */
  readonly logTail: readonly string[];

  constructor(
    code: NatsServerErrorCode,
    message: string,
    options: { hint?: string; cause?: unknown; logTail?: readonly string[] } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.hint !== undefined) this.hint = options.hint;
    this.logTail = options.logTail ?? [];
  }
}

/** Credentials and TLS for the readiness probe, needed only when the user's config requires them. */
export type NatsProbeOptions = Pick<
  NodeConnectionOptions,
  'user' | 'pass' | 'token' | 'authenticator' | 'tls'
>;

export interface EmbeddedNatsServerOptions {
  /** Executable name (looked up on PATH) or path. Default 'nats-server'. */
  binary?: string;
  /** JetStream store, generated config, pid and ports files live here; created if missing. */
  storeDir: string;
  /** Client listen address 'host:port'; '' = 127.0.0.1 on a free port. Port 0 also means a free port. */
  bindAddress?: string;
  /** Unique per cluster member; JetStream clustering requires it. */
  serverName: string;
  /** Route listen address 'host:port'; default 127.0.0.1 on a free port when peers are given. */
  clusterAddress?: string;
  /** Route URLs 'nats://host:port' of the other members; listing this server too is harmless. */
  clusterPeers?: readonly string[];
  /** Default 'harmonylite'. */
  clusterName?: string;
  /**
   * Route authentication: routes reaching this server must carry these credentials, and its
   * own routes to `clusterPeers` carry them. Kept in a 0600 include, never in the generated config.
   */
  clusterAuthorization?: { readonly user: string; readonly password: string };
  /**
   * TLS of the routes: this server's certificate and key (used both ways: it must allow
   * server and client authentication) and the CA that peers' certificates must be signed
   * by (then every route must present one: mutual TLS authenticates routes).
   */
  routeTls?: { readonly certFile: string; readonly keyFile: string; readonly caFile?: string };
  /** Leafnode remote URLs. */
  leafServers?: readonly string[];
  /**
   * The user's nats-server config file. It is included after the generated defaults, so its
   * settings win over them; explicit options above (bindAddress, cluster, leafnodes) win over it.
   * Its top-level `cluster {}` block is merged with the cluster options, never replaced: its
   * keys are kept (route authorization, TLS...) unless an option sets the same key.
   */
  configFile?: string;
  /** Raw nats-server config text appended after everything else except pid and ports files. */
  extraConfig?: string;
  logger: Logger;
  /** Default 15000. */
  startTimeoutMs?: number;
  /** Default true. */
  jetstream?: boolean;
  /**
   * Default true: open() resolves only when `$JS.API.INFO` answers without error (in a cluster:
   * a meta leader is elected). With false it resolves once the client port serves, which is what
   * a node whose cluster peers are not up yet needs.
   */
  waitForJetStream?: boolean;
  jetstreamMaxMemory?: number;
  maxPayload?: number;
  /** Used only by the readiness probe. Without it, a server that refuses the probe's auth counts as serving. */
  probe?: NatsProbeOptions;
}

const DEFAULT_BINARY = 'nats-server';
const DEFAULT_START_TIMEOUT_MS = 15_000;
const STOP_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 20;
const LOG_TAIL_LINES = 50;
const CONFIG_FILE = 'nats-server.conf';
const ROUTE_AUTH_FILE = 'route-auth.conf';
const PID_FILE = 'nats-server.pid';
const PORTS_FILE = /^nats-server_\d+\.ports$/;
const INSTALL_HINT = 'install it: apt-get install -y nats-server (or set [nats] server_binary)';
/** nats-server prefixes each line with "[pid] yyyy/mm/dd hh:mm:ss.micro "; the logger has its own. */
const LINE_PREFIX = /^\[\d+\] \d{4}\/\d\d\/\d\d \d\d:\d\d:\d\d\.\d+ /;

/** Running children and their pid-file pids, stopped when this process exits so none outlives it. */
const liveChildren = new Map<ChildProcess, number | undefined>();
let exitHookInstalled = false;
function trackChild(child: ChildProcess, pid?: number): void {
  liveChildren.set(child, pid);
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const [c, p] of liveChildren) {
      // SIGCONT so a SIGSTOPped server (chaos tests) handles its SIGTERM.
      signal(c, p, 'SIGTERM');
      signal(c, p, 'SIGCONT');
    }
  });
}

interface Address {
  host: string;
  /** -1 = let the server pick. */
  port: number;
}

interface Ports {
  client: number;
  cluster?: number;
}

/**
 * A nats-server child process with JetStream, configured from options, for the embedded default
 * (no `[nats] urls`). open() resolves only when clients can use it; close() stops it.
 * The child is stopped when this process exits.
 */
export class EmbeddedNatsServer {
  readonly #opts: EmbeddedNatsServerOptions;
  readonly #log: Logger;
  readonly #tail: string[] = [];
  #state: 'new' | 'starting' | 'running' | 'exited' | 'closed' = 'new';
  #child: ChildProcess | undefined;
  #childClosed: Promise<void> = Promise.resolve();
  #pid: number | undefined;
  #ports: Ports | undefined;
  #closing: Promise<void> | undefined;
  #stopping = false;

  constructor(options: EmbeddedNatsServerOptions) {
    this.#opts = options;
    this.#log = options.logger.child({ component: 'nats-server', server_name: options.serverName });
  }

  /** 'nats://host:port' that clients on this machine use. */
  get clientUrl(): string {
    const host = clientHost(parseAddress(this.#opts.bindAddress ?? '', 'bindAddress').host);
    return `nats://${host}:${this.port}`;
  }

  get port(): number {
    return this.#started().client;
  }

  get clusterPort(): number | undefined {
    return this.#started().cluster;
  }

  /** The server's pid as written in its pid file; kept after it stops. */
  get pid(): number {
    this.#started();
    if (this.#pid === undefined) throw notRunning();
    return this.#pid;
  }

  /** True between a successful open()/restart() and the child's exit. */
  get running(): boolean {
    return this.#state === 'running';
  }

  async open(): Promise<void> {
    if (this.#state !== 'new') {
      throw new NatsServerError('ERR_NATS_SERVER_START', 'nats-server already opened');
    }
    await this.#start(false);
  }

  /**
   * Stops the server if it runs (also after kill()) and starts it again with the same client port,
   * cluster port and store, so connected clients reconnect and JetStream data survives.
   */
  async restart(): Promise<void> {
    if (this.#state === 'new' || this.#state === 'closed' || this.#state === 'starting') {
      throw new NatsServerError(
        'ERR_NATS_SERVER_NOT_RUNNING',
        `cannot restart nats-server in state ${this.#state}`,
      );
    }
    await this.#stop();
    await this.#start(true);
  }

  /** Sends a signal to the server process (e.g. SIGKILL, SIGSTOP, SIGCONT) without waiting. */
  kill(signal: NodeJS.Signals): void {
    const pid = this.#pid;
    if (pid === undefined || this.#state !== 'running') throw notRunning();
    process.kill(pid, signal);
  }

  /** Stops the server: SIGTERM, then SIGKILL after 10 s. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#stop();
      this.#state = 'closed';
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #started(): Ports {
    if (this.#ports === undefined) throw notRunning();
    return this.#ports;
  }

  async #start(pinPorts: boolean): Promise<void> {
    const opts = this.#opts;
    const binary = opts.binary ?? DEFAULT_BINARY;
    const deadline = Date.now() + (opts.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);
    this.#state = 'starting';
    try {
      const executable = findExecutable(binary);
      const storeDir = resolve(opts.storeDir);
      mkdirSync(storeDir, { recursive: true });
      const configPath = join(storeDir, CONFIG_FILE);
      const inUse = await takeOverStore(storeDir, configPath, this.#log);
      if (inUse !== undefined) {
        throw new NatsServerError('ERR_NATS_SERVER_STORE_IN_USE', inUse.message, { hint: inUse.hint });
      }
      removeStaleFiles(storeDir);
      const cluster = planCluster(opts, storeDir, pinPorts ? this.#ports : undefined);
      if (opts.clusterAuthorization !== undefined)
        writeRouteAuth(storeDir, opts, cluster?.userAuthorization ?? false);
      writeFileSync(configPath, renderConfig(opts, storeDir, pinPorts ? this.#ports : undefined, cluster));
      if (cluster !== undefined && !cluster.authenticated && !isLoopbackAddress(cluster.listen)) {
        this.#log.warn(
          { cluster_addr: cluster.listen },
          'cluster routes listen beyond loopback WITHOUT route authentication: any server that reaches this port joins the cluster and reads and writes every change; give every -cluster-peers URL credentials (nats://user:password@host:port), set [nats] route_ca_file (mutual TLS), or an authorization in the cluster {} block of server_config',
        );
      }

      this.#tail.length = 0;
      this.#pid = undefined;
      this.#stopping = false;
      recordOwner(storeDir);
      const [command, ...args] = tiedToParent(executable, ['-c', configPath]);
      const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      this.#child = child;
      trackChild(child);
      let exit: { code: number | null; signal: NodeJS.Signals | null; error?: Error } | undefined;
      this.#childClosed = new Promise<void>((resolveClosed) => {
        child.once('error', (error) => {
          exit ??= { code: null, signal: null, error };
          liveChildren.delete(child);
          resolveClosed();
        });
        child.once('close', (code, signal) => {
          exit ??= { code, signal };
          liveChildren.delete(child);
          if (this.#state === 'running' && !this.#stopping) {
            this.#log.warn({ code, signal, last_lines: this.#tail.slice(-5) }, 'nats-server exited');
          }
          if (this.#state === 'running' || this.#state === 'starting') this.#state = 'exited';
          resolveClosed();
        });
      });
      this.#pipeLines(child);

      // Fails fast when the child is gone; the caller kills it on timeout.
      const check = (): void => {
        if (exit === undefined) return;
        const how = exit.error
          ? `could not be spawned: ${exit.error.message}`
          : exit.signal
            ? `was killed by ${exit.signal} during start`
            : `exited during start (exit code ${exit.code})`;
        throw new NatsServerError('ERR_NATS_SERVER_START', `nats-server ${how}${complaint(this.#tail)}`, {
          cause: exit.error,
          logTail: [...this.#tail],
          hint: `check the nats-server configuration${opts.configFile ? ` in ${opts.configFile}` : ''}`,
        });
      };
      const until = <T>(what: string, probe: () => Promise<T | undefined> | T | undefined) =>
        pollUntil(what, deadline, check, probe, () => [...this.#tail]);

      const pid = await until('its pid file', () => readPid(join(storeDir, PID_FILE)));
      this.#pid = pid;
      if (liveChildren.has(child)) trackChild(child, pid);
      const ports = await until('its ports file', () =>
        readPorts(join(storeDir, `nats-server_${pid}.ports`)),
      );
      this.#ports = ports;
      const host = clientHost(parseAddress(opts.bindAddress ?? '', 'bindAddress').host);
      await until('its client port to accept connections', () => canConnect(host, ports.client));
      if ((opts.jetstream ?? true) && (opts.waitForJetStream ?? true)) {
        let lastProbe = '';
        await pollUntil(
          'JetStream to answer $JS.API.INFO',
          deadline,
          check,
          async () => {
            const r = await probeJetStream(`nats://${host}:${ports.client}`, deadline, opts.probe);
            lastProbe = r === true ? '' : r;
            return r === true ? true : undefined;
          },
          () => [...this.#tail.slice(-4), lastProbe],
        );
      }
      this.#state = 'running';
      this.#log.info(
        { url: `nats://${host}:${ports.client}`, server_pid: pid, cluster_port: ports.cluster },
        'embedded nats-server ready',
      );
    } catch (err) {
      await this.#stop();
      this.#state = 'exited';
      throw err;
    }
  }

  /** Stops the current child if any and waits until it is gone. */
  async #stop(): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#stopping = true;
    if (child.exitCode === null && child.signalCode === null) {
      signal(child, this.#pid, 'SIGTERM');
      signal(child, this.#pid, 'SIGCONT');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        this.#childClosed.then(() => false),
        new Promise<boolean>((r) => (timer = setTimeout(() => r(true), STOP_TIMEOUT_MS))),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        this.#log.warn({ server_pid: this.#pid }, 'nats-server did not stop within 10 s; killing it');
        signal(child, this.#pid, 'SIGKILL');
      }
    }
    await this.#childClosed;
    if (this.#state !== 'closed') this.#state = 'exited';
  }

  #pipeLines(child: ChildProcess): void {
    for (const stream of [child.stdout, child.stderr]) {
      if (stream === null) continue;
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk: string) => {
        const lines = (partial + chunk).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) this.#line(line);
      });
      stream.on('end', () => {
        if (partial !== '') this.#line(partial);
        partial = '';
      });
    }
  }

  #line(raw: string): void {
    const line = raw.replace(LINE_PREFIX, '').trimEnd();
    if (line === '') return;
    this.#tail.push(line);
    if (this.#tail.length > LOG_TAIL_LINES) this.#tail.shift();
    this.#log.debug(line);
  }
}

function notRunning(): NatsServerError {
  return new NatsServerError('ERR_NATS_SERVER_NOT_RUNNING', 'nats-server has not been started');
}

/** Signals the server by its pid-file pid, falling back to the child handle before it is known. */
function signal(child: ChildProcess, pid: number | undefined, sig: NodeJS.Signals): void {
  try {
    if (pid !== undefined) process.kill(pid, sig);
    else child.kill(sig);
  } catch {
    // Already gone.
  }
}

function findExecutable(binary: string): string {
  const candidates = binary.includes('/')
    ? [resolve(binary)]
    : (process.env.PATH ?? '').split(delimiter).flatMap((dir) => (dir === '' ? [] : [join(dir, binary)]));
  for (const c of candidates) {
    try {
      accessSync(c, fsConstants.X_OK);
      return c;
    } catch {
      // Try the next one.
    }
  }
  const where = binary.includes('/') ? `"${binary}"` : `"${binary}" on PATH`;
  throw new NatsServerError('ERR_NATS_SERVER_NOT_FOUND', `nats-server not found (looked for ${where})`, {
    hint: INSTALL_HINT,
  });
}

function parseAddress(address: string, what: string): Address {
  if (address === '') return { host: '127.0.0.1', port: -1 };
  const i = address.lastIndexOf(':');
  const port = Number(address.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < -1 || port > 65535) {
    throw new NatsServerError('ERR_NATS_SERVER_CONFIG', `${what} must be "host:port", got "${address}"`);
  }
  // nats-server reads port 0 as "the default port"; -1 (HarmonyLite's ":-1") asks for a free one.
  return { host: address.slice(0, i), port: port === 0 ? -1 : port };
}

/** Where a local client reaches a server listening on `host`. */
function clientHost(host: string): string {
  return host === '' || host === '0.0.0.0' || host === '::' || host === '[::]' ? '127.0.0.1' : host;
}

const str = (s: string): string => JSON.stringify(s);
const listen = (a: Address): string => str(`${a.host === '' ? '0.0.0.0' : a.host}:${a.port}`);

/** The generated `cluster {}` block, merged with the user's, and what it leaves open. */
interface ClusterPlan {
  readonly lines: readonly string[];
  /** Route listen address as configured ('host:port'). */
  readonly listen: string;
  /** Routes must authenticate: credentials, mutual TLS, or the user's own authorization. */
  readonly authenticated: boolean;
  /** The user's cluster block has its own authorization (kept). */
  readonly userAuthorization: boolean;
}

/** The body of the user's top-level `cluster {}` block, its relative includes made relative to `storeDir`. */
function userClusterBlock(configFile: string, storeDir: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(configFile, 'utf8');
  } catch {
    return undefined; // nats-server reports an unreadable include itself
  }
  const body = topLevelBlock(text, 'cluster');
  if (body === undefined) return undefined;
  let out = body;
  for (const st of configStatements(body).reverse()) {
    if (st.key !== 'include') continue;
    const path = st.value.replace(/^["']|["']$/g, '');
    const abs = resolve(dirname(resolve(configFile)), path);
    const rel = relative(storeDir, abs);
    out = `${out.slice(0, st.valueStart)}${str(isAbsolute(rel) ? abs : rel)}${out.slice(st.valueEnd)}`;
  }
  return out;
}

function planCluster(
  opts: EmbeddedNatsServerOptions,
  storeDir: string,
  pinned: Ports | undefined,
): ClusterPlan | undefined {
  const peers = opts.clusterPeers ?? [];
  if ((opts.clusterAddress ?? '') === '' && peers.length === 0) return undefined;
  const route = parseAddress(opts.clusterAddress ?? '', 'clusterAddress');
  const user =
    opts.configFile !== undefined && opts.configFile !== ''
      ? userClusterBlock(opts.configFile, storeDir)
      : undefined;
  const userKeys = new Map(configStatements(user ?? '').map((st) => [st.key, st.value]));
  const userAuthorization = userKeys.has('authorization');
  if (userAuthorization && peers.length > 0 && opts.clusterAuthorization === undefined) {
    throw new NatsServerError(
      'ERR_NATS_SERVER_CONFIG',
      "the cluster {} block of server_config requires route authorization, but the -cluster-peers URLs carry no credentials: this server's routes would be refused",
      { hint: 'nats://USER:PASSWORD@host:port in every -cluster-peers URL (the route user of that block)' },
    );
  }
  const lines = ['cluster {'];
  if (user !== undefined)
    lines.push(`  # merged from ${opts.configFile}`, user.trim(), '  # set by HarmonyLite');
  if (!userKeys.has('name')) lines.push(`  name: ${str(opts.clusterName ?? 'harmonylite')}`);
  // The user's listen address stands unless -cluster-addr is given.
  const ownListen = (opts.clusterAddress ?? '') !== '' || !userKeys.has('listen');
  const listenAt = { host: route.host, port: pinned?.cluster ?? route.port };
  if (ownListen) lines.push(`  listen: ${listen(listenAt)}`);
  if (peers.length > 0) lines.push(`  routes: [${peers.map(str).join(', ')}]`);
  if (opts.clusterAuthorization !== undefined) lines.push(`  include ${str(ROUTE_AUTH_FILE)}`);
  const tls = opts.routeTls;
  if (tls !== undefined) {
    const ca = tls.caFile === undefined ? '' : `, ca_file: ${str(resolve(tls.caFile))}, verify: true`;
    lines.push(
      `  tls { cert_file: ${str(resolve(tls.certFile))}, key_file: ${str(resolve(tls.keyFile))}${ca}, timeout: 5 }`,
    );
  }
  lines.push('}');
  return {
    lines,
    listen: ownListen
      ? `${listenAt.host}:${listenAt.port}`
      : (userKeys.get('listen') ?? '').replace(/^["']|["']$/g, ''),
    authenticated: opts.clusterAuthorization !== undefined || userAuthorization || tls?.caFile !== undefined,
    userAuthorization,
  };
}

/**
 * The generated config, in precedence order (later keys win in nats-server's config parser):
 * defaults, the user's file, explicit options, extraConfig, then pid and ports files, which
 * open() depends on. A whole block (e.g. `jetstream {}`) replaces an earlier one.
 */
function renderConfig(
  opts: EmbeddedNatsServerOptions,
  storeDir: string,
  pinned: Ports | undefined,
  cluster: ClusterPlan | undefined,
): string {
  const out: string[] = ['# Generated by HarmonyLite on every start; edits are lost.'];
  const client = parseAddress(opts.bindAddress ?? '', 'bindAddress');
  const peers = opts.clusterPeers ?? [];
  const clustered = (opts.clusterAddress ?? '') !== '' || peers.length > 0;
  const leafs = opts.leafServers ?? [];
  if (clustered && (opts.jetstream ?? true) && peers.length === 0 && leafs.length === 0) {
    throw new NatsServerError(
      'ERR_NATS_SERVER_CONFIG',
      'a JetStream cluster needs routes: cluster address set but no cluster peers',
      { hint: "set cluster peers to the members' route URLs (nats://host:port; a node may list itself)" },
    );
  }

  out.push(`server_name: ${str(opts.serverName)}`);
  out.push(`listen: ${listen(client)}`);
  if (opts.jetstream ?? true) {
    const maxMem = opts.jetstreamMaxMemory === undefined ? '' : `, max_mem: ${opts.jetstreamMaxMemory}`;
    out.push(`jetstream { store_dir: ${str(storeDir)}${maxMem} }`);
  }
  if (opts.configFile !== undefined && opts.configFile !== '') {
    // 2.9.10 resolves include paths relative to the including file and mangles absolute ones.
    const file = resolve(opts.configFile);
    const rel = relative(storeDir, file);
    out.push(`include ${str(isAbsolute(rel) ? file : rel)}`);
  }
  if (opts.bindAddress || pinned) {
    out.push(`listen: ${listen({ host: client.host, port: pinned?.client ?? client.port })}`);
  }
  if (opts.maxPayload !== undefined) out.push(`max_payload: ${opts.maxPayload}`);
  if (cluster !== undefined) out.push(...cluster.lines);
  if (leafs.length > 0) {
    out.push(`leafnodes { remotes: [${leafs.map((url) => `{ url: ${str(url)} }`).join(', ')}] }`);
  }
  if (opts.extraConfig) out.push(opts.extraConfig);
  out.push(`pid_file: ${str(join(storeDir, PID_FILE))}`);
  out.push(`ports_file_dir: ${str(storeDir)}`);
  return out.join('\n') + '\n';
}

/** The cluster's route credentials and the routes that carry them (they override the generated ones). */
function writeRouteAuth(storeDir: string, opts: EmbeddedNatsServerOptions, userAuthorization: boolean): void {
  const { user, password } = opts.clusterAuthorization!;
  const routes = (opts.clusterPeers ?? []).map((peer) => {
    const url = new URL(peer);
    url.username = encodeURIComponent(user);
    url.password = encodeURIComponent(password);
    return str(url.href.replace(/\/$/, ''));
  });
  const path = join(storeDir, ROUTE_AUTH_FILE);
  writeFileSync(
    path,
    // The user's own route authorization is kept; the credentials then only go into the routes.
    `${userAuthorization ? '' : `authorization { user: ${str(user)}, password: ${str(password)} }\n`}routes: [${routes.join(', ')}]\n`,
    {
      mode: 0o600,
    },
  );
  chmodSync(path, 0o600);
}

/** A killed server leaves its pid and ports files behind; they must not be mistaken for the new one's. */
function removeStaleFiles(storeDir: string): void {
  rmSync(join(storeDir, PID_FILE), { force: true });
  for (const name of readdirSync(storeDir)) {
    if (PORTS_FILE.test(name)) rmSync(join(storeDir, name), { force: true });
  }
}

function readPid(path: string): number | undefined {
  try {
    const pid = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function readPorts(path: string): Ports | undefined {
  let parsed: { nats?: string[]; cluster?: string[] };
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as typeof parsed;
  } catch {
    return undefined; // Not written yet, or half written.
  }
  const portOf = (urls: string[] | undefined): number | undefined => {
    const first = urls?.[0];
    return first === undefined ? undefined : Number(new URL(first).port);
  };
  const client = portOf(parsed.nats);
  if (client === undefined) return undefined;
  const cluster = portOf(parsed.cluster);
  return cluster === undefined ? { client } : { client, cluster };
}

function canConnect(host: string, port: number): Promise<boolean | undefined> {
  return new Promise((done) => {
    const socket = createConnection({ host: host.replace(/^\[(.*)\]$/, '$1'), port });
    socket.once('connect', () => {
      socket.destroy();
      done(true);
    });
    socket.once('error', () => {
      socket.destroy();
      done(undefined);
    });
  });
}

/**
 * True when JetStream answers `$JS.API.INFO` without error, or when the server refuses the
 * probe's credentials (it serves; JetStream readiness is then left to the real client).
 * Otherwise the reason, for the timeout message.
 */
async function probeJetStream(
  url: string,
  deadline: number,
  probe: NatsProbeOptions | undefined,
): Promise<true | string> {
  const timeout = Math.max(100, Math.min(2_000, deadline - Date.now()));
  let nc: NatsConnection;
  try {
    nc = await connect({ servers: url, reconnect: false, timeout, name: 'harmonylite-readiness', ...probe });
  } catch (err) {
    if (err instanceof AuthorizationError && probe === undefined) return true;
    return `connect: ${errorMessage(err)}`;
  }
  try {
    const msg = await nc.request('$JS.API.INFO', '', { timeout: Math.min(timeout, 1_000) });
    const info = msg.json<{ error?: { code?: number; description?: string } }>();
    return info.error === undefined
      ? true
      : `$JS.API.INFO: ${info.error.description ?? JSON.stringify(info.error)}`;
  } catch (err) {
    return `$JS.API.INFO: ${errorMessage(err)}`;
  } finally {
    await nc.close().catch(() => undefined);
  }
}

async function pollUntil<T>(
  what: string,
  deadline: number,
  check: () => void,
  probe: () => Promise<T | undefined> | T | undefined,
  seen: () => string[],
): Promise<T> {
  for (;;) {
    check();
    const v = await probe();
    check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      const lines = seen().filter((l) => l !== '');
      throw new NatsServerError(
        'ERR_NATS_SERVER_START_TIMEOUT',
        `nats-server did not start in time: waited for ${what}${lines.length ? `; last seen:\n  ${lines.slice(-5).join('\n  ')}` : ''}`,
        { logTail: lines, hint: 'raise the start timeout, or check the server log at debug level' },
      );
    }
    await new Promise((r) => setTimeout(r, POLL_INTERVAL_MS));
  }
}

/** The server's complaint: its fatal or error lines, else its last lines. */
function complaint(tail: readonly string[]): string {
  const bad = tail.filter((l) => /\[(FTL|ERR)\]|^nats-server:/.test(l));
  const lines = (bad.length > 0 ? bad : tail).slice(-5);
  return lines.length === 0 ? '' : `: ${lines.join('\n  ')}`;
}
