import { readFileSync } from 'node:fs';
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  type Authenticator,
  type NatsConnection,
  type NodeConnectionOptions,
} from '@nats-io/transport-node';
import type { NatsConfig } from '../config/config.ts';
import type { Logger } from '../logger.ts';

/** A NATS failure the user can act on: stable code, never a secret in the message. */
export class NatsConnectError extends Error {
  override readonly name = 'NatsConnectError';
  readonly code: 'ERR_NATS_AUTH' | 'ERR_NATS_UNREACHABLE' | 'ERR_NATS_TLS' | 'ERR_NATS_CONFIG';
  constructor(code: NatsConnectError['code'], message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

function readSecretFile(path: string, what: string): Uint8Array {
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

/** Connection options from `[nats]`: user/password, token, NKey seed, .creds, TLS and mTLS. */
export function connectionOptions(
  config: NatsConfig,
  servers: string[],
  name: string,
): NodeConnectionOptions {
  const authenticator: Authenticator[] = [];
  if (config.seed_file !== '') {
    const seed = new TextDecoder().decode(readSecretFile(config.seed_file, 'NKey seed file')).trim();
    authenticator.push(nkeyAuthenticator(new TextEncoder().encode(seed)));
  }
  if (config.creds_file !== '')
    authenticator.push(credsAuthenticator(readSecretFile(config.creds_file, 'creds file')));
  const opts: NodeConnectionOptions = {
    servers,
    name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: config.reconnect_wait_seconds * 1000,
    reconnectJitter: 250,
    pingInterval: 10_000,
    maxPingOut: 3,
    timeout: 5000,
  };
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

function classify(err: unknown): NatsConnectError {
  const msg = String((err as Error)?.message ?? err);
  if (/authoriz|authentic|permission/i.test(msg)) {
    return new NatsConnectError('ERR_NATS_AUTH', `NATS refused the credentials: ${msg}`, { cause: err });
  }
  if (/tls|certificate|ssl/i.test(msg))
    return new NatsConnectError('ERR_NATS_TLS', `NATS TLS failed: ${msg}`, { cause: err });
  return new NatsConnectError('ERR_NATS_UNREACHABLE', `cannot reach NATS: ${msg}`, { cause: err });
}

/**
 * Connects, retrying the first connection `connect_retries` times (wrong
 * credentials fail at once); once connected, reconnects without a limit.
 */
export async function connectNats(
  config: NatsConfig,
  servers: string[],
  name: string,
  logger: Logger,
  signal?: AbortSignal,
): Promise<NatsConnection> {
  const opts = connectionOptions(config, servers, name);
  const attempts = config.connect_retries + 1;
  for (let attempt = 1; ; attempt++) {
    try {
      const nc = await connect(opts);
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === 'disconnect') logger.warn({ server: s.server }, 'NATS disconnected');
          else if (s.type === 'reconnect') logger.info({ server: s.server }, 'NATS reconnected');
          else if (s.type === 'error') logger.warn({ err: String(s.error) }, 'NATS error');
        }
      })();
      return nc;
    } catch (err) {
      const e = classify(err);
      if (e.code === 'ERR_NATS_AUTH' || e.code === 'ERR_NATS_TLS' || attempt >= attempts || signal?.aborted)
        throw e;
      logger.warn({ attempt, of: attempts, servers, err: e.message }, 'NATS connect failed, retrying');
      await new Promise((r) => setTimeout(r, config.reconnect_wait_seconds * 1000));
    }
  }
}
