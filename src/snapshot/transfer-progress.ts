import type { Logger } from '../logger.ts';

const MB = 1024 * 1024;

/** Where a transfer stands, for a display. */
export interface TransferState {
  readonly operation: 'upload' | 'download';
  readonly objectName: string;
  readonly bytes: number;
  readonly totalBytes: number;
  readonly bytesPerSecond: number;
}

/** Shows transfers to a person (the CLI's terminal bar); called per chunk, so it throttles itself. */
export interface ProgressDisplay {
  update(state: TransferState): void;
  /** The transfer ended: erase what was shown. */
  done(): void;
}

export interface TransferProgressOptions {
  /** "upload" or "download", for the log line. */
  readonly operation: 'upload' | 'download';
  readonly objectName: string;
  readonly totalBytes: number;
  readonly logger: Logger;
  /** How often a long transfer logs its progress. Default 5 s. */
  readonly logIntervalMs?: number;
  readonly display?: ProgressDisplay | undefined;
}

/**
 * Progress of one snapshot transfer: `update()` is called per chunk and only
 * compares a timestamp; a transfer longer than the log interval logs
 * "snapshot <operation> progress" with bytes and MB/s, and a display (if
 * any) sees every update.
 */
export class TransferProgress {
  readonly #options: TransferProgressOptions;
  readonly #startedAt = performance.now();
  readonly #logIntervalMs: number;
  #nextLogAt: number;
  #bytes = 0;

  constructor(options: TransferProgressOptions) {
    this.#options = options;
    this.#logIntervalMs = options.logIntervalMs ?? 5000;
    this.#nextLogAt = this.#startedAt + this.#logIntervalMs;
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
    const { operation, objectName, totalBytes, logger, display } = this.#options;
    display?.update({ operation, objectName, bytes, totalBytes, bytesPerSecond: this.rate() });
    const now = performance.now();
    if (now >= this.#nextLogAt) {
      this.#nextLogAt = now + this.#logIntervalMs;
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

  done(): void {
    this.#options.display?.done();
  }
}
