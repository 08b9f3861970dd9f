import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { Config } from '../config/config.ts';
import { ConfigError } from '../config/config-error.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { connectNats } from '../nats/nats-connection.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { createSnapshotStore } from '../snapshot/create-snapshot-store.ts';
import { saveSnapshot } from '../snapshot/save-snapshot.ts';
import { progressTerminal } from '../snapshot/transfer-progress.ts';

/**
 * `-save-snapshot`: takes one snapshot now, bypassing the leader lease, stores
 * it in the configured store and prints where it went on stdout; resolves to
 * the exit code (0). Failures reject with an error that the CLI prints as
 * `Error: …` (exit 1; 2 for configuration errors). SIGINT/SIGTERM abort the
 * upload cleanly: the previous snapshots stay, temporary files are removed.
 */
export async function runSaveSnapshot(config: Config, logger: Logger): Promise<number> {
  requireDatabase(config);
  const nodeId = resolveNodeId(config.node_id, config.db_path, {
    busyTimeoutMs: config.busy_timeout,
    create: true,
  })!;
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    logger.warn({ signal: sig }, 'aborting the snapshot');
    abort.abort(new Error(`interrupted by ${sig}`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let nc: NatsConnection | undefined;
  try {
    if (config.snapshot.store === 'nats') {
      const servers = config.nats.urls.length > 0 ? config.nats.urls : [embeddedServerUrl(config)];
      nc = await connectNats(
        config.nats,
        servers,
        `harmonylite-${nodeId}-save-snapshot`,
        logger,
        abort.signal,
      );
    }
    const store = createSnapshotStore(config, { nc });
    try {
      await store.open(abort.signal);
      const saved = await saveSnapshot({
        config,
        nodeId,
        store,
        logger,
        signal: abort.signal,
        terminal: progressTerminal(),
      });
      process.stdout.write(
        `Snapshot saved to ${store.description}: ${saved.manifest.dataObject} ` +
          `(${saved.manifest.sizeBytes} bytes, manifest ${saved.manifestObject})\n`,
      );
      return 0;
    } finally {
      await store.close();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await nc?.close().catch(() => undefined);
  }
}

/**
 * With no `[nats] urls` the node runs an embedded nats-server whose store is
 * next to the database; a running node's server announces its client port in
 * the store directory (nats-server's ports file), which is where this connects.
 */
function embeddedServerUrl(config: Config): string {
  const storeDir =
    config.nats.store_dir !== ''
      ? config.nats.store_dir
      : join(dirname(config.db_path), `${basename(config.db_path)}-nats`);
  try {
    const pid = readFileSync(join(storeDir, 'nats-server.pid'), 'utf8').trim();
    const ports = JSON.parse(readFileSync(join(storeDir, `nats-server_${pid}.ports`), 'utf8')) as {
      nats?: string[];
    };
    const url = ports.nats?.[0];
    if (url !== undefined) return url;
  } catch {
    // no running embedded server
  }
  throw new ConfigError(
    `-save-snapshot with the NATS object store needs a NATS server: [nats] urls is empty and no running node's embedded server was found in ${storeDir}`,
    { hint: 'start the node first, set [nats] urls, or use another [snapshot] store' },
  );
}
