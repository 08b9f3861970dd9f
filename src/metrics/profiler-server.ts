import type { IncomingMessage, ServerResponse } from 'node:http';
import { Session } from 'node:inspector/promises';
import type { Logger } from '../logger.ts';
import { HttpEndpoint } from './http-endpoint.ts';

export interface ProfilerServerOptions {
  /** Listen address "host:port" (`-pprof`). */
  readonly bind: string;
  readonly logger: Logger;
}

/** Longest CPU profile one request may ask for, seconds. */
const MAX_SECONDS = 300;
/** Go's pprof default. */
const DEFAULT_SECONDS = 30;

const INDEX = `HarmonyLite profiler (the main thread: config, NATS, publishing, scheduling)

/debug/pprof/profile?seconds=N  CPU profile over N seconds (default ${DEFAULT_SECONDS}, at most ${MAX_SECONDS}),
                                a .cpuprofile: Chrome DevTools (Performance, load profile) or speedscope
/debug/pprof/heap               heap snapshot now, a .heapsnapshot: Chrome DevTools (Memory, load);
                                it pauses the node while it is taken
`;

/**
 * `-pprof ADDR`: what HarmonyLite's Go profiler endpoint gave an operator, in
 * the formats Node's tools read: V8 CPU profiles and heap snapshots taken on
 * demand through node:inspector (no flag at start, no cost until asked). One
 * profile at a time (409 otherwise). The shard workers are threads of their own
 * and are not in these profiles.
 */
export class ProfilerServer {
  readonly #endpoint: HttpEndpoint;
  readonly #log: Logger;
  #busy = false;

  constructor(options: ProfilerServerOptions) {
    this.#log = options.logger.child({ component: 'pprof' });
    this.#endpoint = new HttpEndpoint(
      options.bind,
      (req, res) => this.#handle(req, res),
      (err) => this.#log.warn({ err: String(err) }, 'profiler request failed'),
    );
  }

  /** `http://host:port` once open. */
  get url(): string | undefined {
    return this.#endpoint.url;
  }

  async open(): Promise<void> {
    await this.#endpoint.open();
    this.#log.info({ url: `${this.#endpoint.url ?? ''}/debug/pprof/` }, 'profiler listening');
  }

  close(): Promise<void> {
    return this.#endpoint.close();
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method !== 'GET') return text(res, 405, 'GET only\n');
    if (url.pathname === '/debug/pprof/' || url.pathname === '/debug/pprof') return text(res, 200, INDEX);
    const kind =
      url.pathname === '/debug/pprof/profile'
        ? 'cpu'
        : url.pathname === '/debug/pprof/heap'
          ? 'heap'
          : undefined;
    if (kind === undefined) return text(res, 404, 'not found: see /debug/pprof/\n');
    let seconds = DEFAULT_SECONDS;
    if (kind === 'cpu' && url.searchParams.has('seconds')) {
      seconds = Number(url.searchParams.get('seconds'));
      if (!(seconds > 0 && seconds <= MAX_SECONDS)) {
        return text(res, 400, `seconds must be a number > 0 and <= ${MAX_SECONDS}\n`);
      }
    }
    if (this.#busy) return text(res, 409, 'a profile is being taken; try again when it is done\n');
    this.#busy = true;
    const session = new Session();
    session.connect();
    try {
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      if (kind === 'cpu') {
        this.#log.info({ seconds }, 'taking a CPU profile');
        await session.post('Profiler.enable');
        await session.post('Profiler.start');
        await new Promise((r) => setTimeout(r, seconds * 1000));
        const { profile } = await session.post('Profiler.stop');
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-disposition': `attachment; filename="harmonylite-${process.pid}-${stamp}.cpuprofile"`,
        });
        res.end(JSON.stringify(profile));
      } else {
        this.#log.info('taking a heap snapshot');
        res.writeHead(200, {
          'content-type': 'application/json',
          'content-disposition': `attachment; filename="harmonylite-${process.pid}-${stamp}.heapsnapshot"`,
        });
        session.on('HeapProfiler.addHeapSnapshotChunk', (m) => res.write(m.params.chunk));
        await session.post('HeapProfiler.takeHeapSnapshot', { reportProgress: false });
        res.end();
      }
    } finally {
      session.disconnect();
      this.#busy = false;
    }
  }
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(body);
}
