import { readFileSync } from 'node:fs';
import { connect as tcpConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions as TlsConnectionOptions } from 'node:tls';
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type Authenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import type { NatsConfig } from '../config/config.ts';
import { redactUrl, type Logger } from '../logger.ts';
import type { NatsProbeOptions } from './embedded-server.ts';
import { errorMessage } from '../error-message.ts';

/** A NATS failure the user can act on: stable code, never a secret in the message. */
export class NatsConnectError extends Error {
  override readonly name = 'NatsConnectError';
  readonly code: 'ERR_NATS_AUTH' | 'ERR_NATS_UNREACHABLE' | 'ERR_NATS_TLS' | 'ERR_NATS_CONFIG';
  constructor(code: NatsConnectError['code'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

function readSecretFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new NatsConnectError(
      'ERR_NATS_CONFIG',
      `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? err}`,
      {
        cause: err,
      },
    );
  }
}

/**
 * Credentials written into server URLs (`nats://user:password@host`, `nats://token@host`), as
 * HarmonyLite's nats.go honours them and nats.js ignores them (it then connects without any:
 * "Authorization Violation"). Returns the URLs without their user info and the first
 * credentials found; `[nats]` user_name, user_password and token take precedence.
 */
export function urlCredentials(servers: readonly string[]): {
  servers: string[];
  user?: string;
  pass?: string;
  token?: string;
} {
  const out: ReturnType<typeof urlCredentials> = { servers: [] };
  for (const server of servers) {
    const at = server.lastIndexOf('@');
    if (at < 0) {
      out.servers.push(server);
      continue;
    }
    const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(server)?.[0] ?? '';
    const info = server.slice(scheme.length, at);
    out.servers.push(scheme + server.slice(at + 1));
    if (out.user !== undefined || out.token !== undefined) continue;
    const colon = info.indexOf(':');
    const decode = (x: string) => {
      try {
        return decodeURIComponent(x);
      } catch {
        return x;
      }
    };
    if (colon < 0) out.token = decode(info);
    else {
      out.user = decode(info.slice(0, colon));
      out.pass = decode(info.slice(colon + 1));
    }
  }
  return out;
}

/** Connection options from `[nats]`: user/password, token, NKey seed, .creds, TLS and mTLS. */
export function connectionOptions(
  config: NatsConfig,
  servers: string[],
  name: string,
): NodeConnectionOptions {
  const fromUrls = urlCredentials(servers);
  const explicit = config.user_name !== '' || config.token !== '';
  const opts: NodeConnectionOptions = {
    servers: fromUrls.servers,
    name,
    ...(explicit || fromUrls.user === undefined ? {} : { user: fromUrls.user, pass: fromUrls.pass ?? '' }),
    ...(explicit || fromUrls.token === undefined ? {} : { token: fromUrls.token }),
    maxReconnectAttempts: -1,
    reconnectTimeWait: config.reconnect_wait_seconds * 1000,
    reconnectJitter: 250,
    pingInterval: 10_000,
    maxPingOut: 3,
    timeout: 5000,
    ...probeOptions(config),
  };
  return opts;
}

/**
 * The credentials and TLS settings of `[nats]` alone: what the node connects with, and what the
 * embedded server's readiness probe needs when the user's server config requires them
 * (EmbeddedNatsServerOptions.probe).
 */
export function probeOptions(config: NatsConfig): NatsProbeOptions {
  const opts: NatsProbeOptions = {};
  const authenticator: Authenticator[] = [];
  if (config.seed_file !== '') {
    const seed = new TextDecoder().decode(readSecretFile(config.seed_file, 'NKey seed file')).trim();
    authenticator.push(nkeyAuthenticator(new TextEncoder().encode(seed)));
  }
  if (config.creds_file !== '')
    authenticator.push(credsAuthenticator(readSecretFile(config.creds_file, 'creds file')));
  if (authenticator.length === 1) opts.authenticator = authenticator[0]!;
  else if (authenticator.length > 1) opts.authenticator = authenticator;
  if (config.user_name !== '') {
    opts.user = config.user_name;
    opts.pass = config.user_password;
  }
  if (config.token !== '') opts.token = config.token;
  if (config.ca_file !== '' || config.cert_file !== '') {
    const tls: NonNullable<NodeConnectionOptions['tls']> = {};
    if (config.ca_file !== '') tls.caFile = config.ca_file;
    if (config.cert_file !== '') {
      tls.certFile = config.cert_file;
      tls.keyFile = config.key_file;
    }
    opts.tls = tls;
  }
  return opts;
}

/** Every error names the servers tried (without their user info): "cannot reach NATS" alone says nothing of where. */
function classify(err: unknown, servers: readonly string[]): NatsConnectError {
  const msg = errorMessage(err);
  const at = ` at ${servers.map(redactUrl).join(', ')}`;
  if (/authoriz|authentic|permission/i.test(msg)) {
    return new NatsConnectError('ERR_NATS_AUTH', `NATS${at} refused the credentials: ${msg}`, { cause: err });
  }
  if (/tls|certificate|ssl/i.test(msg))
    return new NatsConnectError('ERR_NATS_TLS', `NATS TLS failed: ${msg} (${at.trim()})`, { cause: err });
  return new NatsConnectError('ERR_NATS_UNREACHABLE', `cannot reach NATS${at}: ${msg}`, { cause: err });
}

const CHECK_TIMEOUT_MS = 2000;

/** host and port of a server entry (`host:port`, `nats://…`, `tls://…`), or undefined. */
function hostPort(server: string): { host: string; port: number } | undefined {
  try {
    const u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(server) ? server : `nats://${server}`);
    return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port: u.port === '' ? 4222 : Number(u.port) };
  } catch {
    return undefined;
  }
}

/**
 * Under TLS 1.3 a server that refuses the client's certificate (none given, or one its CA did
 * not sign) does so after the handshake has completed on the client's side: nats.js then waits
 * for its connect timeout, reports "timeout", and every retry does the same (40 s of "cannot
 * reach NATS" with the default retries). So when TLS is configured, one handshake is made by
 * hand first, followed by a PING: a TLS alert instead of an answer names the problem at once.
 * Inconclusive outcomes (unreachable, no TLS, no answer) return undefined: the real connection
 * then reports what it finds.
 */
async function checkTls(
  servers: readonly string[],
  tls: TlsConnectionOptions,
): Promise<NatsConnectError | undefined> {
  const target = servers.map(hostPort).find((x) => x !== undefined);
  if (target === undefined) return undefined;
  let tcp: Socket | undefined;
  try {
    return await new Promise<NatsConnectError | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), CHECK_TIMEOUT_MS);
      const done = (v: NatsConnectError | undefined) => {
        clearTimeout(timer);
        resolve(v);
      };
      tcp = tcpConnect(target.port, target.host);
      tcp.once('error', () => done(undefined));
      let info = '';
      tcp.on('data', (chunk: Buffer) => {
        info += chunk.toString('latin1');
        if (!info.includes('\r\n')) return;
        tcp!.removeAllListeners('data');
        let parsed: { tls_required?: boolean; tls_available?: boolean } = {};
        try {
          parsed = JSON.parse(info.slice(info.indexOf(' ') + 1, info.indexOf('\r\n'))) as typeof parsed;
        } catch {
          return done(undefined);
        }
        if (parsed.tls_required !== true && parsed.tls_available !== true) return done(undefined);
        const secure = tlsConnect({
          ...tls,
          socket: tcp!,
          // SNI takes host names only.
          ...(/^[\d.:]+$/.test(target.host) ? {} : { servername: target.host }),
        });
        let answered = false;
        secure.once('secureConnect', () => secure.write('PING\r\n'));
        secure.once('data', () => {
          answered = true;
          secure.destroy();
          done(undefined);
        });
        secure.once('error', (err: NodeJS.ErrnoException) => {
          if (answered) return;
          const refused = /ALERT/.test(err.code ?? '');
          done(
            new NatsConnectError(
              'ERR_NATS_TLS',
              refused
                ? `NATS TLS failed: the server at ${target.host}:${target.port} refused this client's certificate (${err.code}): ` +
                    (tls.cert === undefined
                      ? 'it requires one; set [nats] cert_file and key_file'
                      : "is it signed by a CA in the server's tls ca_file?")
                : `NATS TLS failed: ${err.message} (at ${target.host}:${target.port})`,
              { cause: err },
            ),
          );
        });
      });
    });
  } finally {
    tcp?.destroy();
  }
}

/** The TLS options nats.js would use, for checkTls. */
function tlsOptions(config: NatsConfig): TlsConnectionOptions | undefined {
  if (config.ca_file === '' && config.cert_file === '') return undefined;
  return {
    ...(config.ca_file !== '' ? { ca: readSecretFile(config.ca_file, 'CA file') } : {}),
    ...(config.cert_file !== ''
      ? {
          cert: readSecretFile(config.cert_file, 'certificate file'),
          key: readSecretFile(config.key_file, 'key file'),
        }
      : {}),
  };
}

/**
 * Connects, retrying the first connection `connect_retries` times (wrong
 * credentials and TLS failures fail at once); once connected, reconnects
 * without a limit. Server URLs are logged without their user info.
 */
export async function connectNats(
  config: NatsConfig,
  servers: string[],
  name: string,
  logger: Logger,
  signal?: AbortSignal,
): Promise<NatsConnection> {
  const opts = connectionOptions(config, servers, name);
  const tls = tlsOptions(config);
  if (tls !== undefined) {
    const refused = await checkTls(urlCredentials(servers).servers, tls);
    if (refused !== undefined) throw refused;
  }
  const attempts = config.connect_retries + 1;
  for (let attempt = 1; ; attempt++) {
    try {
      const nc = await connect(opts);
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === 'disconnect') logger.warn({ server: redactUrl(s.server) }, 'NATS disconnected');
          else if (s.type === 'reconnect') logger.info({ server: redactUrl(s.server) }, 'NATS reconnected');
          else if (s.type === 'error') logger.warn({ err: String(s.error) }, 'NATS error');
        }
      })();
      return nc;
    } catch (err) {
      const e = classify(err, servers);
      if (e.code === 'ERR_NATS_AUTH' || e.code === 'ERR_NATS_TLS' || attempt >= attempts || signal?.aborted)
        throw e;
      logger.warn(
        { attempt, of: attempts, servers: servers.map(redactUrl), err: e.message },
        'NATS connect failed, retrying',
      );
      await new Promise((r) => setTimeout(r, config.reconnect_wait_seconds * 1000));
    }
  }
}
