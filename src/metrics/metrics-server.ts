import type { Registry } from 'prom-client';
import type { Logger } from '../logger.ts';
import { HttpEndpoint, requestPath } from './http-endpoint.ts';

/**
 * The Prometheus endpoint: `GET /metrics` (and HEAD) serves the registry in the
 * text exposition format; every other path or method is a 404, so the port
 * shows nothing else. Binds to `[prometheus] bind` (loopback by default).
 */
export class MetricsServer {
  readonly #registry: Registry;
  readonly #logger: Logger;
  readonly #endpoint: HttpEndpoint;

  constructor(options: { readonly bind: string; readonly registry: Registry; readonly logger: Logger }) {
    this.#registry = options.registry;
    this.#logger = options.logger;
    this.#endpoint = new HttpEndpoint(
      options.bind,
      async (req, res) => {
        if (requestPath(req) !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
          res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
          return;
        }
        const body = await this.#registry.metrics();
        res.writeHead(200, { 'content-type': this.#registry.contentType });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err) => this.#logger.warn({ err: String(err) }, 'serving /metrics failed'),
    );
  }

  /** `http://host:port/metrics`, once open. */
  get url(): string | undefined {
    const base = this.#endpoint.url;
    return base === undefined ? undefined : `${base}/metrics`;
  }

  get address(): HttpEndpoint['address'] {
    return this.#endpoint.address;
  }

  async open(): Promise<void> {
    await this.#endpoint.open();
    this.#logger.info({ url: this.url }, 'metrics endpoint listening');
  }

  async close(): Promise<void> {
    await this.#endpoint.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
