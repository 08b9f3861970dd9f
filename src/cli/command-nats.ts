import { mkdirSync, readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Config, NatsConfig } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import { EmbeddedNatsServer } from '../nats/embedded-server.ts';
import { embeddedClientAuth, type EmbeddedClientAuth } from '../nats/embedded-client-auth.ts';
import { connectNats, probeOptions } from '../nats/nats-connection.ts';

/** The embedded server's cluster flags, as the node was started with them. */
export interface CommandClusterOptions {
  readonly clusterAddress?: string;
  readonly clusterPeers?: readonly string[];
  readonly leafServers?: readonly string[];
}

/** A NATS connection for a one-shot command, and what it started to get it. */
export interface CommandNats {
  readonly nc: NatsConnection;
  /** Where it connected: `[nats] urls`, a running node's embedded server, or one started for the command. */
  readonly source: 'urls' | 'running-node' | 'started';
  close(): Promise<void>;
}

/** The embedded server's store: `[nats] store_dir`, else next to the database (as the node places it). */
export function embeddedStoreDir(config: Config): string {
  return config.nats.store_dir !== ''
    ? config.nats.store_dir
    : join(dirname(config.db_path), `${basename(config.db_path)}-nats`);
}

/** How the embedded server's clients authenticate, as the node does (generated credentials by default). */
export function embeddedAuth(nats: NatsConfig, storeDir: string): EmbeddedClientAuth | undefined {
  mkdirSync(storeDir, { recursive: true });
  return embeddedClientAuth(nats, storeDir);
}

/**
 * The client URL of the embedded server a running node announced in its store
 * (nats-server's pid and ports files), when that server still runs.
 */
export function runningServerUrl(storeDir: string): string | undefined {
  try {
    const pid = readFileSync(join(storeDir, 'nats-server.pid'), 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') return undefined;
    const ports = JSON.parse(readFileSync(join(storeDir, `nats-server_${pid}.ports`), 'utf8')) as {
      nats?: string[];
    };
    return ports.nats?.[0];
  } catch {
    return undefined; // No running embedded server.
  }
}

/**
 * Connects a command (-save-snapshot, -dead-letter-stuck, -status, ...) to NATS
 * the way the node does: `[nats] urls` when set; otherwise the node's embedded
 * server, the running node's when it is up, else started for the command on the
 * node's store (with the same cluster flags, so a clustered store rejoins its
 * cluster) and stopped by close(). Connection errors name the URLs tried.
 */
export async function connectForCommand(
  config: Config,
  nodeId: number,
  name: string,
  logger: Logger,
  options: { signal?: AbortSignal; cluster?: CommandClusterOptions; retries?: number } = {},
): Promise<CommandNats> {
  let nats =
    options.retries === undefined ? config.nats : { ...config.nats, connect_retries: options.retries };
  const connect = (servers: string[]) => connectNats(nats, servers, name, logger, options.signal);
  if (config.nats.urls.length > 0) {
    const nc = await connect(config.nats.urls);
    return { nc, source: 'urls', close: () => nc.close().catch(() => undefined) };
  }
  const storeDir = embeddedStoreDir(config);
  const auth = embeddedAuth(nats, storeDir);
  if (auth !== undefined) nats = auth.nats;
  const running = runningServerUrl(storeDir);
  if (running !== undefined) {
    const nc = await connect([running]);
    return { nc, source: 'running-node', close: () => nc.close().catch(() => undefined) };
  }
  const cluster = options.cluster ?? {};
  const server = new EmbeddedNatsServer({
    probe: probeOptions(nats),
    ...(auth === undefined ? {} : { extraConfig: auth.serverConfig }),
    binary: config.nats.server_binary,
    storeDir,
    bindAddress: config.nats.bind_address,
    serverName: `harmonylite-${nodeId}`,
    ...(cluster.clusterAddress !== undefined ? { clusterAddress: cluster.clusterAddress } : {}),
    ...(cluster.clusterPeers !== undefined ? { clusterPeers: cluster.clusterPeers } : {}),
    ...(cluster.leafServers !== undefined ? { leafServers: cluster.leafServers } : {}),
    ...(config.nats.server_config !== '' ? { configFile: config.nats.server_config } : {}),
    ...(config.nats.max_payload > 0 ? { maxPayload: config.nats.max_payload } : {}),
    logger: logger.child({ component: 'nats-server' }),
    waitForJetStream: (cluster.clusterPeers?.length ?? 0) === 0,
  });
  await server.open();
  logger.info(
    { url: server.clientUrl, store: storeDir },
    'the node is not running: started its embedded nats-server',
  );
  try {
    const nc = await connect([server.clientUrl]);
    return {
      nc,
      source: 'started',
      close: async () => {
        await nc.close().catch(() => undefined);
        await server.close();
      },
    };
  } catch (err) {
    await server.close();
    throw err;
  }
}
