import { mkdtemp, readdir, rm, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Config } from '../config/config.ts';
import { SnapshotError } from './snapshot-error.ts';

const PREFIX = '.harmonylite-snapshot-';
const MB = 1024 * 1024;

/** `[snapshot] temp_dir`, or the database's directory (same file system, so nothing crosses devices). */
export function snapshotTempParent(config: Config): string {
  return resolve(config.snapshot.temp_dir !== '' ? config.snapshot.temp_dir : dirname(config.db_path));
}

/**
 * A private directory for one snapshot save or restore:
 * `<parent>/.harmonylite-snapshot-<pid>-<random>`. The owner removes it on
 * success and on failure; directories left by a process that was killed are
 * removed by `removeStaleTempDirs` (the pid in the name tells whether the owner lives).
 */
export class SnapshotTempDir {
  readonly path: string;

  private constructor(path: string) {
    this.path = path;
  }

  static async create(parent: string): Promise<SnapshotTempDir> {
    try {
      return new SnapshotTempDir(await mkdtemp(join(parent, `${PREFIX}${process.pid}-`)));
    } catch (err) {
      throw diskError(err, parent, 0);
    }
  }

  file(name: string): string {
    return join(this.path, name);
  }

  async remove(): Promise<void> {
    await rm(this.path, { recursive: true, force: true });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.remove();
  }
}

/** Removes temporary snapshot directories in `parent` whose process no longer runs. */
export async function removeStaleTempDirs(parent: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const m = /^\.harmonylite-snapshot-(\d+)-/.exec(name);
    if (m === null || processAlive(Number(m[1]))) continue;
    await rm(join(parent, name), { recursive: true, force: true }).catch(() => undefined);
    removed.push(join(parent, name));
  }
  return removed;
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Fails early, with the clear message, when `dir` has less than `bytes` free. */
export async function assertFreeSpace(dir: string, bytes: number): Promise<void> {
  let free: number;
  try {
    const s = await statfs(dir);
    free = s.bavail * s.bsize;
  } catch {
    return; // the write itself will tell
  }
  if (free < bytes) throw noSpace(dir, bytes, free);
}

function noSpace(dir: string, bytes: number, free: number | undefined, cause?: unknown): SnapshotError {
  const need = `~${Math.max(1, Math.ceil(bytes / MB))} MB`;
  const have = free === undefined ? '' : ` (${(free / MB).toFixed(1)} MB free)`;
  return new SnapshotError(
    'ERR_SNAPSHOT_NO_SPACE',
    `not enough disk space in ${dir} for a snapshot of ${need}${have}`,
    {
      ...(cause === undefined ? {} : { cause }),
      hint: 'free disk space there, or point [snapshot] temp_dir at a larger file system',
    },
  );
}

/** True for "the disk is full" from the OS (ENOSPC, EDQUOT) or SQLite (SQLITE_FULL). */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return (
    code === 'ENOSPC' ||
    code === 'EDQUOT' ||
    (typeof code === 'string' && code.startsWith('SQLITE_FULL')) ||
    /database or disk is full|no space left on device/i.test(err instanceof Error ? err.message : '')
  );
}

/** The snapshot error for a failed write into `dir`: the clear "not enough disk space" one when the disk is full. */
export function diskError(err: unknown, dir: string, bytes: number): unknown {
  return isDiskFull(err) ? noSpace(dir, bytes, undefined, err) : err;
}
