import type { Config } from '../config/config.ts';
import type { Logger } from '../logger.ts';
import { ProfilerServer } from '../metrics/profiler-server.ts';
import { HarmonyLiteNode } from '../node/harmonylite-node.ts';
import type { CliArgs } from './parse-args.ts';
import { terminalProgressBar } from './progress-bar.ts';

/** Runs a node until SIGINT/SIGTERM (or `sleep_timeout` of idleness); resolves to the exit code. */
export async function runNode(config: Config, args: CliArgs, logger: Logger): Promise<number> {
  const profiler = args.pprof === undefined ? undefined : new ProfilerServer({ bind: args.pprof, logger });
  await profiler?.open();
  try {
    return await runUntilStopped(config, args, logger);
  } finally {
    await profiler?.close();
  }
}

async function runUntilStopped(config: Config, args: CliArgs, logger: Logger): Promise<number> {
  const node = new HarmonyLiteNode({
    config,
    logger,
    ...(args.clusterAddr !== undefined ? { clusterAddress: args.clusterAddr } : {}),
    ...(args.clusterPeers !== undefined ? { clusterPeers: args.clusterPeers } : {}),
    ...(args.leafServers !== undefined ? { leafServers: args.leafServers } : {}),
    progressDisplay: terminalProgressBar(),
  });
  let stopping: Promise<void> | undefined;
  let exitCode = 0;
  const stop = (why: string) => {
    if (stopping !== undefined) {
      logger.warn({ signal: why }, 'second signal: exiting now');
      process.exit(130);
    }
    logger.info({ signal: why }, 'stopping (send the signal again to exit at once)');
    stopping = node.close();
  };
  const onSignal = (sig: NodeJS.Signals) => stop(sig);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    await node.open();
  } catch (err) {
    const stopped = stopping !== undefined; // a signal during the start: a requested stop, not a failure
    await node.close().catch(() => undefined);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (stopped) return 0;
    throw err;
  }
  let idleTimer: NodeJS.Timeout | undefined;
  if (config.sleep_timeout > 0) {
    let last = { published: 0, applied: 0 };
    let idleSince = Date.now();
    idleTimer = setInterval(
      () => {
        const s = node.status();
        const now = {
          published: s.lastPublishAt,
          applied: Math.max(0, ...s.shards.map((x) => x.lastApplyAt)),
        };
        if (now.published !== last.published || now.applied !== last.applied || s.pending > 0)
          idleSince = Date.now();
        last = now;
        if (Date.now() - idleSince >= config.sleep_timeout && stopping === undefined) {
          logger.info({ sleep_timeout: config.sleep_timeout }, 'idle for sleep_timeout; exiting');
          stop('sleep_timeout');
        }
      },
      Math.min(1000, config.sleep_timeout),
    );
  }
  // Keep the event loop alive until a stop begins, then wait for it.
  await new Promise<void>((resolve) => {
    const t = setInterval(() => {
      if (stopping !== undefined) {
        clearInterval(t);
        resolve();
      }
    }, 50);
  });
  try {
    await stopping;
  } catch (err) {
    logger.error({ err }, 'error while stopping');
    exitCode = 1;
  }
  if (idleTimer) clearInterval(idleTimer);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return exitCode;
}
