import type { Config } from '../config/config.ts';
import { ConfigError } from '../config/config-error.ts';
import { requireDatabase } from '../config/load-config.ts';
import type { Logger } from '../logger.ts';
import { resolveNodeId } from '../node/node-id.ts';
import { nodeVerifySubject, type VerifyRequest } from '../verify/verify-protocol.ts';
import { parseDurationMs, parseNodesWanted, type WaitResult } from '../verify/write-waiter.ts';
import { connectForCommand, type CommandClusterOptions } from './command-nats.ts';

export interface WaitReplicatedOptions {
  /** A global change id of this node, or "last". */
  readonly after: string;
  readonly nodes?: string;
  readonly timeout?: string;
  readonly cluster?: CommandClusterOptions;
}

/**
 * `-wait-replicated ID [-nodes all|quorum|N] [-timeout 5s]`: asks the running
 * node (over NATS) to wait until its changes up to ID are on enough nodes.
 * Exit 0 when they are, 1 on timeout; prints the positions as JSON.
 */
export async function runWaitReplicated(
  config: Config,
  logger: Logger,
  options: WaitReplicatedOptions,
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  requireDatabase(config);
  const hint = 'harmonylite -config FILE -wait-replicated ID|last [-nodes all|quorum|N] [-timeout 5s]';
  if (!/^(\d{1,15}|last)$/.test(options.after))
    throw new ConfigError(`-wait-replicated needs a global change id or "last", got "${options.after}"`, {
      hint,
    });
  const nodes = parseNodesWanted(options.nodes ?? 'all');
  if (nodes === undefined)
    throw new ConfigError(`-nodes must be all, quorum or a number of nodes, got "${options.nodes}"`, {
      hint,
    });
  const timeoutMs = parseDurationMs(options.timeout ?? '5s');
  if (timeoutMs === undefined)
    throw new ConfigError(`-timeout must be a duration such as 5s or 500ms, got "${options.timeout}"`, {
      hint,
    });
  const nodeId = resolveNodeId(config.node_id, config.db_path, {
    busyTimeoutMs: config.busy_timeout,
    create: false,
  });
  if (nodeId === undefined) throw new ConfigError(`no node id in ${config.db_path}: has the node ever run?`);
  const nats = await connectForCommand(config, nodeId, 'harmonylite-wait-replicated', logger, {
    ...(options.cluster === undefined ? {} : { cluster: options.cluster }),
    retries: 0,
  });
  try {
    const request: VerifyRequest = {
      op: 'wait',
      after: options.after === 'last' ? 'last' : Number(options.after),
      nodes,
      timeoutMs,
    };
    let m;
    try {
      m = await nats.nc.request(
        nodeVerifySubject(config.nats.stream_prefix, nodeId),
        JSON.stringify(request),
        {
          timeout: timeoutMs + 5000,
        },
      );
    } catch (err) {
      throw new Error(`node ${nodeId} did not answer: is it running? (${(err as Error).message})`);
    }
    const r = JSON.parse(m.string()) as WaitResult | { error: string };
    if ('error' in r) throw new Error(`node ${nodeId}: ${r.error}`);
    out.write(`${JSON.stringify(r)}\n`);
    return r.reached ? 0 : 1;
  } finally {
    await nats.close();
  }
}
