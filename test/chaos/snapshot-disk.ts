/**
 * Where the chaos nodes keep snapshots: the shared local store
 * (`[snapshot.local] path`) and the temp dir (`[snapshot] temp_dir`), each on
 * its own small tmpfs when this machine lets us mount one (root), so that a
 * fault can fill either of them up and free it again.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';

export type SnapshotDiskArea = 'store' | 'temp';

export class SnapshotDisk {
  readonly storeDir: string;
  readonly tempDir: string;
  /** Why the areas are plain directories that cannot be filled, when they are. */
  readonly unavailableReason: string | undefined;
  readonly #mounted: string[] = [];

  private constructor(parent: string, sizeBytes: number) {
    this.storeDir = join(parent, 'snapshot-store');
    this.tempDir = join(parent, 'snapshot-temp');
    let reason: string | undefined;
    for (const dir of [this.storeDir, this.tempDir]) {
      mkdirSync(dir, { recursive: true });
      if (reason !== undefined) continue;
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir], {
          stdio: ['ignore', 'ignore', 'pipe'],
        });
        this.#mounted.push(dir);
      } catch (err) {
        const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
        reason = `cannot mount a tmpfs at ${dir} (uid ${process.getuid?.() ?? '?'}): ${(stderr || String(err)).split('\n')[0]}`;
      }
    }
    if (reason !== undefined) this.#unmountAll();
    this.unavailableReason = reason;
  }

  /** Creates both areas under `parent`, each a tmpfs of `sizeBytes` when possible. */
  static create(parent: string, sizeBytes: number): SnapshotDisk {
    return new SnapshotDisk(parent, sizeBytes);
  }

  get fillable(): boolean {
    return this.unavailableReason === undefined;
  }

  dir(area: SnapshotDiskArea): string {
    return area === 'store' ? this.storeDir : this.tempDir;
  }

  /**
   * Writes a filler file into `area` until the file system refuses (ENOSPC),
   * down to the last 512 bytes. Returns the bytes written.
   */
  fill(area: SnapshotDiskArea): number {
    if (!this.fillable) throw new Error(`snapshot disk is not fillable: ${this.unavailableReason}`);
    const fd = openSync(this.#filler(area), 'w');
    let written = 0;
    try {
      for (const size of [1024 * 1024, 64 * 1024, 4096, 512]) {
        const chunk = Buffer.alloc(size, 0x5a);
        for (;;) {
          try {
            written += writeSync(fd, chunk);
          } catch (err) {
            if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
            throw err;
          }
        }
      }
    } finally {
      closeSync(fd);
    }
    return written;
  }

  /** Removes the filler file of `area` (the fault heals). */
  free(area: SnapshotDiskArea): void {
    rmSync(this.#filler(area), { force: true });
  }

  /** Unmounts what was mounted; the directories stay, for the caller to remove. */
  close(): void {
    this.#unmountAll();
  }

  #filler(area: SnapshotDiskArea): string {
    // A leading dot: never listed, pruned or cleaned up by the node.
    return join(this.dir(area), '.chaos-filler');
  }

  #unmountAll(): void {
    for (const dir of this.#mounted.splice(0)) {
      try {
        execFileSync('umount', [dir], { stdio: 'ignore' });
      } catch {
        // Busy: a lazy unmount detaches it now and frees it when the last user goes.
        execFileSync('umount', ['-l', dir], { stdio: 'ignore' });
      }
    }
  }
}
