import { createServer } from 'node:net';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { EmbeddedNatsServer, NatsServerError } from '../../src/nats/embedded-server.ts';
import { silentLogger } from '../../src/logger.ts';
import { tempDir } from './temp-dir.ts';
import { waitFor } from './wait-for.ts';

/** A real nats-server on loopback random ports whose store lives in a temp dir removed on close(). */
export interface TestNatsServer {
  readonly url: string;
  readonly name: string;
  readonly server: EmbeddedNatsServer;
  /** The server's store directory (JetStream keeps its data in `<storeDir>/jetstream`). */
  readonly storeDir: string;
  kill(signal: NodeJS.Signals): void;
  /** Same ports, same store: clients reconnect and JetStream data survives. */
  restart(): Promise<void>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export interface TestNatsServerOptions {
  extraConfig?: string;
  /** Default true. */
  jetstream?: boolean;
}

export interface TestNatsCluster {
  readonly servers: TestNatsServer[];
  readonly urls: string[];
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

let counter = 0;

function wrap(
  server: EmbeddedNatsServer,
  name: string,
  storeDir: string,
  remove: () => void,
): TestNatsServer {
  let closing: Promise<void> | undefined;
  const close = () => (closing ??= server.close().finally(remove));
  return {
    get url() {
      return server.clientUrl;
    },
    name,
    server,
    storeDir,
    kill: (signal) => server.kill(signal),
    restart: () => server.restart(),
    close,
    [Symbol.asyncDispose]: close,
  };
}

async function create(
  name: string,
  opts: TestNatsServerOptions & {
    clusterAddress?: string;
    clusterPeers?: string[];
    waitForJetStream?: boolean;
  },
): Promise<TestNatsServer> {
  const dir = tempDir('hl-nats-');
  const server = new EmbeddedNatsServer({
    storeDir: dir.path,
    serverName: name,
    logger: silentLogger(),
    ...opts,
  });
  try {
    await server.open();
  } catch (err) {
    await server.close();
    dir.remove();
    throw err;
  }
  return wrap(server, name, dir.path, dir.remove);
}

/** One JetStream-enabled server (unless `jetstream: false`), ready when it resolves. */
export function startNatsServer(opts: TestNatsServerOptions = {}): Promise<TestNatsServer> {
  return create(`test-${process.pid}-${++counter}`, opts);
}

/** Free loopback ports, found by binding port 0; the caller binds them soon after. */
async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const s = createServer();
          s.once('error', reject);
          s.listen(0, '127.0.0.1', () => resolve(s));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const a = s.address();
    if (a === null || typeof a === 'string') throw new Error('no port');
    return a.port;
  });
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/**
 * A JetStream cluster of `size` servers on loopback, resolved once a meta leader is elected and
 * an R`size` stream can be created.
 */
export async function startNatsCluster(size = 3, opts: TestNatsServerOptions = {}): Promise<TestNatsCluster> {
  // A route port taken between freePorts() and the server's bind fails the start: try again.
  for (let attempt = 1; ; attempt++) {
    try {
      return await tryStartCluster(size, opts);
    } catch (err) {
      if (!(err instanceof NatsServerError) || err.code !== 'ERR_NATS_SERVER_START' || attempt === 3)
        throw err;
    }
  }
}

async function tryStartCluster(size: number, opts: TestNatsServerOptions): Promise<TestNatsCluster> {
  const id = `c${process.pid}-${++counter}`;
  const routePorts = await freePorts(size);
  const peers = routePorts.map((p) => `nats://127.0.0.1:${p}`);
  const started = await Promise.allSettled(
    routePorts.map((port, i) =>
      create(`${id}-n${i + 1}`, {
        ...opts,
        clusterAddress: `127.0.0.1:${port}`,
        clusterPeers: peers,
        // Each server alone has no meta leader; the cluster's readiness is checked below.
        waitForJetStream: false,
      }),
    ),
  );
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const close = async () => {
    await Promise.all(servers.map((s) => s.close()));
  };
  const failed = started.find((r) => r.status === 'rejected');
  if (failed) {
    await close();
    throw failed.reason;
  }
  const urls = servers.map((s) => s.url);
  if (opts.jetstream ?? true) {
    try {
      await waitForReplicatedStream(urls, size);
    } catch (err) {
      await close();
      throw err;
    }
  }
  return { servers, urls, close, [Symbol.asyncDispose]: close };
}

async function waitForReplicatedStream(urls: string[], replicas: number): Promise<void> {
  const nc = await connect({ servers: urls });
  try {
    // No API check: it would fail before the meta leader is elected.
    const jsm = await jetstreamManager(nc, { timeout: 2_000, checkAPI: false });
    const name = `HL_PROBE_${process.pid}_${++counter}`;
    await waitFor(
      `an R${replicas} stream to be created on ${urls.join(',')}`,
      async () => {
        await jsm.streams.add({ name, subjects: [`${name}.>`], num_replicas: replicas });
        return true;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    await jsm.streams.delete(name);
  } finally {
    await nc.close();
  }
}
