import type { Logger } from '../logger.ts';

const MB = 1024 * 1024;
const BAR_WIDTH = 30;

export interface TransferProgressOptions {
  /** "upload" or "download", for the log line. */
  readonly operation: 'upload' | 'download';
  readonly objectName: string;
  readonly totalBytes: number;
  readonly logger: Logger;
  /** How often a long transfer logs its progress. Default 5 s. */
  readonly logIntervalMs?: number;
  /** A terminal to draw a one-line progress bar on (usually stderr when it is a TTY); none by default. */
  readonly terminal?: NodeJS.WriteStream | undefined;
}

/**
 * Progress of one snapshot transfer: `update()` is called per chunk and only
 * compares a timestamp; a transfer longer than the log interval logs
 * "snapshot <operation> progress" with bytes and MB/s, and on a terminal a
 * bar is redrawn at most 4 times a second and erased at the end.
 */
export class TransferProgress {
  readonly #options: TransferProgressOptions;
  readonly #startedAt = performance.now();
  readonly #logIntervalMs: number;
  #nextLogAt: number;
  #nextDrawAt: number;
  #drawn = false;
  #bytes = 0;

  constructor(options: TransferProgressOptions) {
    this.#options = options;
    this.#logIntervalMs = options.logIntervalMs ?? 5000;
    this.#nextLogAt = this.#startedAt + this.#logIntervalMs;
    this.#nextDrawAt = this.#startedAt + 250;
  }

  /** Bytes transferred so far. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Bytes per second so far. */
  rate(): number {
    const s = (performance.now() - this.#startedAt) / 1000;
    return s > 0 ? this.#bytes / s : 0;
  }

  /** Cumulative bytes; cheap enough to call for every chunk. */
  readonly update = (bytes: number): void => {
    this.#bytes = bytes;
    const now = performance.now();
    if (this.#options.terminal !== undefined && now >= this.#nextDrawAt) {
      this.#nextDrawAt = now + 250;
      this.#draw();
    }
    if (now >= this.#nextLogAt) {
      this.#nextLogAt = now + this.#logIntervalMs;
      const { operation, objectName, totalBytes, logger } = this.#options;
      logger.info(
        {
          object: objectName,
          bytes,
          total_bytes: totalBytes,
          percent: totalBytes > 0 ? Math.floor((100 * bytes) / totalBytes) : 100,
          mb_per_s: Number((this.rate() / MB).toFixed(1)),
        },
        `snapshot ${operation} progress`,
      );
    }
  };

  /** Erases the bar (if one was drawn). */
  done(): void {
    if (this.#drawn) this.#options.terminal?.write('\r\x1b[2K');
    this.#drawn = false;
  }

  #draw(): void {
    const { operation, objectName, totalBytes, terminal } = this.#options;
    const share = totalBytes > 0 ? Math.min(1, this.#bytes / totalBytes) : 1;
    const filled = Math.round(share * BAR_WIDTH);
    const bar = `${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}`;
    const line =
      `${operation} ${objectName} [${bar}] ${(share * 100).toFixed(0).padStart(3)}% ` +
      `${(this.#bytes / MB).toFixed(1)}/${(totalBytes / MB).toFixed(1)} MB ${(this.rate() / MB).toFixed(1)} MB/s`;
    terminal?.write(`\r\x1b[2K${line}`);
    this.#drawn = true;
  }
}

/** stderr when it is a terminal, else undefined (no bar in logs, pipes and tests). */
export function progressTerminal(): NodeJS.WriteStream | undefined {
  return process.stderr.isTTY ? process.stderr : undefined;
}
