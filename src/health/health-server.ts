import type { Logger } from '../logger.ts';
import { HttpEndpoint, requestPath, type RequestHandler } from '../metrics/http-endpoint.ts';
import type { HealthReport } from './health-check.ts';

export interface HealthServerOptions {
  /** `[health_check] bind` (loopback by default). */
  readonly bind: string;
  /** `[health_check] path`, e.g. "/health". */
  readonly path: string;
  /** `[health_check] detailed`: answer with the JSON report instead of one word. */
  readonly detailed: boolean;
  /** Runs the checks; called once per request. */
  readonly evaluate: () => HealthReport;
  readonly logger: Logger;
  /** More GET endpoints on the same listener, by path (e.g. `/replicated`). */
  readonly routes?: ReadonlyMap<string, RequestHandler>;
}

/**
 * The health endpoint: `GET <path>` (and HEAD) answers 200 when the node is
 * `ok` and 503 when it is `degraded` or `unhealthy`; the body is the JSON
 * report when `detailed`, else the status word. Any other path is a 404.
 */
export class HealthServer {
  readonly #options: HealthServerOptions;
  readonly #endpoint: HttpEndpoint;

  constructor(options: HealthServerOptions) {
    this.#options = options;
    this.#endpoint = new HttpEndpoint(
      options.bind,
      (req, res) => {
        const route = options.routes?.get(requestPath(req));
        if (route !== undefined && requestPath(req) !== options.path) return route(req, res);
        if (requestPath(req) !== options.path || (req.method !== 'GET' && req.method !== 'HEAD')) {
          res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('not found\n');
          return;
        }
        const report = options.evaluate();
        const code = report.status === 'ok' ? 200 : 503;
        const [type, body] = options.detailed
          ? ['application/json', `${JSON.stringify(report)}\n`]
          : ['text/plain; charset=utf-8', `${report.status}\n`];
        res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : body);
      },
      (err) => options.logger.warn({ err: String(err) }, 'serving the health check failed'),
    );
  }

  /** `http://host:port<path>`, once open. */
  get url(): string | undefined {
    const base = this.#endpoint.url;
    return base === undefined ? undefined : `${base}${this.#options.path}`;
  }

  get address(): HttpEndpoint['address'] {
    return this.#endpoint.address;
  }

  async open(): Promise<void> {
    await this.#endpoint.open();
    this.#options.logger.info({ url: this.url }, 'health endpoint listening');
  }

  async close(): Promise<void> {
    await this.#endpoint.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
