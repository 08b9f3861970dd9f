import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A `bind` value that is not `host:port`, `:port` or `[ipv6]:port`. */
export class BindAddressError extends Error {
  override readonly name = 'BindAddressError';
  readonly code = 'ERR_BIND_ADDRESS';
}

export interface BindAddress {
  /** undefined = every interface (HarmonyLite's `:3010`). */
  readonly host: string | undefined;
  readonly port: number;
}

/**
 * Parses a `[prometheus] bind` / `[health_check] bind` value. HarmonyLite's
 * form `":3010"` listens on every interface; ours defaults to
 * `"127.0.0.1:…"`, so nothing is exposed beyond the machine unless asked. Pure.
 */
export function parseBindAddress(bind: string): BindAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(bind.trim());
  const port = Number(m?.[3]);
  if (m === null || !(port >= 0 && port <= 65535)) {
    throw new BindAddressError(`bind address must be host:port, :port or [ipv6]:port, got "${bind}"`);
  }
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? undefined : host, port };
}

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/**
 * One small HTTP listener (node:http) on a bind address. `open()` resolves once
 * it listens (rejects when the port is taken); `close()` drops keep-alive
 * connections and resolves once the port is free. Idempotent close.
 */
export class HttpEndpoint {
  readonly #bind: BindAddress;
  readonly #server: Server;
  #address: AddressInfo | undefined;

  constructor(bind: string, handler: RequestHandler, onError: (err: unknown) => void) {
    this.#bind = parseBindAddress(bind);
    this.#server = createServer((req, res) => {
      Promise.resolve()
        .then(() => handler(req, res))
        .catch((err: unknown) => {
          onError(err);
          if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
          res.end('internal error\n');
        });
    });
  }

  /** The address listened on, once open (the real port when bound to port 0). */
  get address(): AddressInfo | undefined {
    return this.#address;
  }

  /** `http://host:port` of the listener, once open; IPv6 hosts in brackets, "any" as loopback. */
  get url(): string | undefined {
    const a = this.#address;
    if (a === undefined) return undefined;
    const host =
      a.address === '::' || a.address === '0.0.0.0'
        ? '127.0.0.1'
        : a.family === 'IPv6'
          ? `[${a.address}]`
          : a.address;
    return `http://${host}:${a.port}`;
  }

  async open(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#bind.port, this.#bind.host, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#address = this.#server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    if (!this.#server.listening) return;
    await new Promise<void>((resolve) => {
      this.#server.close(() => resolve());
      this.#server.closeAllConnections();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The request's path without its query string. */
export function requestPath(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const q = url.indexOf('?');
  return q < 0 ? url : url.slice(0, q);
}
