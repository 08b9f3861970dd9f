import { accessSync, constants as fsConstants, readFileSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Logger } from '../logger.ts';

/**
 * An embedded nats-server never outlives its node, and a node restarted after
 * kill -9 just starts:
 * - The child is started through util-linux `setpriv --pdeathsig KILL`, so the
 *   kernel kills it when the node dies, however it dies (an exit hook cannot
 *   run on SIGKILL). setpriv execs the server: the pid stays the server's.
 *   The kernel ties the signal to the thread that spawned the child: open the
 *   embedded server from the main thread.
 * - Where setpriv is missing, a server orphaned by a dead node is replaced at the
 *   next start when it is provably that node's: it runs our generated config of
 *   this store, and the node recorded in the store's owner file is gone (the
 *   server's parent is no longer that node). A server whose node still runs is
 *   refused, as two servers on one JetStream store corrupt it.
 */

const OWNER_FILE = 'nats-server.owner';
const REPLACE_TIMEOUT_MS = 10_000;

/** The command that runs `executable args` tied to this process's life, as [command, ...args] (setpriv from PATH). */
export function tiedToParent(executable: string, args: readonly string[]): [string, ...string[]] {
  const setpriv = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => dir !== '')
    .map((dir) => join(dir, 'setpriv'))
    .find((p) => {
      try {
        accessSync(p, fsConstants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
  return setpriv === undefined
    ? [executable, ...args]
    : [setpriv, '--pdeathsig', 'KILL', '--', executable, ...args];
}

/** Records this process as the store's owner, for takeOverStore() of a later start. */
export function recordOwner(storeDir: string): void {
  writeFileSync(join(storeDir, OWNER_FILE), `${process.pid}\n`);
}

function readNumber(path: string): number | undefined {
  try {
    const n = Number(readFileSync(path, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The parent pid of a live process, or undefined when it is gone (or a zombie). */
function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return undefined;
    return Number(fields[1]);
  } catch {
    return undefined;
  }
}

function runsConfig(pid: number, configPath: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(configPath);
  } catch {
    return false; // Gone, or no /proc.
  }
}

/** Why the store cannot be taken over. */
export interface StoreInUse {
  readonly message: string;
  readonly hint: string;
}

/**
 * Makes the store free for a new server: nothing to do when no server of ours
 * runs on it; a server orphaned by a dead node is stopped (SIGTERM, then
 * SIGKILL) and logged; a server whose node is alive is refused (returned).
 */
export async function takeOverStore(
  storeDir: string,
  configPath: string,
  log: Logger,
): Promise<StoreInUse | undefined> {
  const pid = readNumber(join(storeDir, 'nats-server.pid'));
  if (pid === undefined || !runsConfig(pid, configPath)) return undefined;
  const owner = readNumber(join(storeDir, OWNER_FILE));
  const parent = parentOf(pid);
  if (parent === undefined) return undefined;
  if (owner === undefined || parent === owner) {
    return {
      message: `another nats-server (pid ${pid}) still runs on store ${storeDir}`,
      hint:
        owner === undefined || owner === process.pid
          ? `stop it first: kill ${pid}`
          : `another node (pid ${owner}) uses this store: stop it, or give this node its own db_path or [nats] store_dir`,
    };
  }
  log.warn(
    { server_pid: pid, dead_node_pid: owner, store: storeDir },
    'replacing the nats-server left running by a node that died',
  );
  const stopped = async (signal: NodeJS.Signals, waitMs: number): Promise<boolean> => {
    try {
      process.kill(pid, signal);
    } catch {
      return true;
    }
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline) {
      if (parentOf(pid) === undefined) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return parentOf(pid) === undefined;
  };
  if (await stopped('SIGTERM', REPLACE_TIMEOUT_MS)) return undefined;
  if (await stopped('SIGKILL', REPLACE_TIMEOUT_MS)) return undefined;
  return {
    message: `the orphaned nats-server (pid ${pid}) on store ${storeDir} did not stop`,
    hint: `kill -9 ${pid}`,
  };
}
