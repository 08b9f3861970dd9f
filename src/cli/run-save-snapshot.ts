import type { Config } from '../config/config.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { createSnapshotStore } from '../snapshot/create-snapshot-store.ts';
import { saveSnapshot } from '../snapshot/save-snapshot.ts';
import { terminalProgressBar } from './progress-bar.ts';
import { connectForCommand, type CommandClusterOptions, type CommandNats } from './command-nats.ts';

/**
 * `-save-snapshot`: takes one snapshot now, bypassing the leader lease, stores
 * it in the configured store and prints where it went on stdout; resolves to
 * the exit code (0). Failures reject with an error that the CLI prints as
 * `Error: …` (exit 1; 2 for configuration errors). SIGINT/SIGTERM abort the
 * upload cleanly: the previous snapshots stay, temporary files are removed.
 * With the NATS object store on the embedded default, a stopped node's server
 * is started for the command (`connectForCommand`).
 */
export async function runSaveSnapshot(
  config: Config,
  logger: Logger,
  cluster: CommandClusterOptions = {},
): Promise<number> {
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
  let nats: CommandNats | undefined;
  try {
    if (config.snapshot.store === 'nats') {
      nats = await connectForCommand(config, nodeId, `harmonylite-${nodeId}-save-snapshot`, logger, {
        signal: abort.signal,
        cluster,
      });
    }
    const store = createSnapshotStore(config, { nc: nats?.nc });
    try {
      await store.open(abort.signal);
      const saved = await saveSnapshot({
        config,
        nodeId,
        store,
        logger,
        signal: abort.signal,
        display: terminalProgressBar(),
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
    await nats?.close();
  }
}
