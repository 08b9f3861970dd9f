#!/usr/bin/env node
/**
 * The `harmonylite` command. Usage and config errors print `Error: …` and
 * `Try: …` and exit 2; runtime failures exit 1. The first SIGINT/SIGTERM stops
 * gracefully (the current step finishes); a second one exits at once.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../config/config-error.ts';
import { loadConfig } from '../config/load-config.ts';
import { configFileWarning } from '../config/secret-files.ts';
import { createLogger } from '../logger.ts';
import { parseArgs, USAGE } from './parse-args.ts';
import { runCleanup } from './run-cleanup.ts';
import { runNode } from './run-node.ts';
import { runDeadLetterStuck } from './run-dead-letter-stuck.ts';
import { runSaveSnapshot } from './run-save-snapshot.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { runStatus } from './run-status.ts';
import { runSchemaStatus, runSchemaStatusCluster } from './run-schema-status.ts';
import { runMigrate, runMigrateResolved } from './run-migrate.ts';
import { runVerify } from './run-verify.ts';
import { runWaitReplicated } from './run-wait-replicated.ts';

/** The package version: package.json is two levels up from src/cli, three from dist/src/cli. */
function version(): string {
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'harmonylite' && pkg.version !== undefined) return pkg.version;
    } catch {
      // not at this level
    }
  }
  return 'unknown';
}

/** Errors the user can fix carry a hint; print it as "Try: …". */
function report(err: unknown): number {
  const e = err as Error & { hint?: string; code?: string };
  process.stderr.write(`Error: ${e.message ?? String(err)}\n`);
  if (e.hint !== undefined) process.stderr.write(`Try: ${e.hint}\n`);
  return err instanceof ConfigError || (err as { usage?: unknown }).usage === true ? 2 : 1;
}

export async function main(argv: readonly string[]): Promise<number> {
  let args;
  try {
    args = parseArgs(argv);
  } catch (err) {
    return report(err);
  }
  if (args.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  if (args.version) {
    process.stdout.write(`harmonylite ${version()}\n`);
    return 0;
  }
  try {
    const config = loadConfig(args.config);
    if (args.nodeId !== undefined) config.node_id = args.nodeId;
    // Every line carries the node id, also when it is derived (as the node derives it).
    // Generated here when a node or a snapshot will run (they would store it anyway); only read for
    // -cleanup, -status, -dead-letter-stuck, the migration commands, -verify and -wait-replicated,
    // which must not add a table.
    let nodeId: number | undefined;
    if (config.db_path !== '')
      try {
        nodeId = resolveNodeId(config.node_id, config.db_path, {
          busyTimeoutMs: config.busy_timeout,
          create:
            !args.cleanup &&
            !args.status &&
            args.deadLetterStuck === undefined &&
            args.migrate === undefined &&
            args.migrateResolved === undefined &&
            !args.verify &&
            args.waitReplicated === undefined,
        });
      } catch {
        nodeId = undefined; // no database yet: the command itself reports it
      }
    const logger = createLogger({
      ...config.logging,
      ...(nodeId !== undefined ? { nodeId } : {}),
    });
    const exposed = configFileWarning(config, args.config);
    if (exposed !== undefined) logger.warn({ config: args.config }, exposed);
    // Commands that need NATS on the embedded default start the node's server with the node's flags.
    const cluster = {
      ...(args.clusterAddr !== undefined ? { clusterAddress: args.clusterAddr } : {}),
      ...(args.clusterPeers !== undefined ? { clusterPeers: args.clusterPeers } : {}),
      ...(args.leafServers !== undefined ? { leafServers: args.leafServers } : {}),
    };
    if (args.cleanup) return runCleanup(config, logger, { force: args.force });
    if (args.deadLetterStuck !== undefined)
      return await runDeadLetterStuck(config, args.deadLetterStuck, logger, cluster);
    if (args.status) return await runStatus(config, logger);
    if (args.saveSnapshot) return await runSaveSnapshot(config, logger, cluster);
    if (args.schemaStatus) return runSchemaStatus(config);
    if (args.schemaStatusCluster) return await runSchemaStatusCluster(config, logger, cluster);
    if (args.migrate !== undefined) return await runMigrate(config, args.migrate, logger, cluster);
    if (args.migrateResolved !== undefined) return runMigrateResolved(config, args.migrateResolved);
    if (args.verify)
      return await runVerify(config, logger, {
        ...(args.tables === undefined ? {} : { tables: args.tables }),
        repair: args.repair,
        cluster,
      });
    if (args.waitReplicated !== undefined)
      return await runWaitReplicated(config, logger, {
        after: args.waitReplicated,
        ...(args.nodes === undefined ? {} : { nodes: args.nodes }),
        ...(args.timeout === undefined ? {} : { timeout: args.timeout }),
        cluster,
      });
    return await runNode(config, args, logger);
  } catch (err) {
    return report(err);
  }
}

// Exit explicitly once the command is done: a timer leaked by a library must never keep
// a stopped daemon alive. stdout and stderr are synchronous for files and pipes on Linux.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => process.exit(report(err)),
);
