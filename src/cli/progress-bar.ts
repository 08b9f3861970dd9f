import type { ProgressDisplay, TransferState } from '../snapshot/transfer-progress.ts';

const MB = 1024 * 1024;
const BAR_WIDTH = 30;
const REDRAW_MS = 250;

/** A one-line progress bar on a terminal, redrawn at most 4 times a second and erased at the end. */
export class TerminalProgressBar implements ProgressDisplay {
  readonly #terminal: NodeJS.WriteStream;
  #nextDrawAt = performance.now() + REDRAW_MS;
  #drawn = false;

  constructor(terminal: NodeJS.WriteStream) {
    this.#terminal = terminal;
  }

  update(state: TransferState): void {
    const now = performance.now();
    if (now < this.#nextDrawAt) return;
    this.#nextDrawAt = now + REDRAW_MS;
    const { operation, objectName, bytes, totalBytes, bytesPerSecond } = state;
    const share = totalBytes > 0 ? Math.min(1, bytes / totalBytes) : 1;
    const filled = Math.round(share * BAR_WIDTH);
    const bar = `${'#'.repeat(filled)}${'-'.repeat(BAR_WIDTH - filled)}`;
    const line =
      `${operation} ${objectName} [${bar}] ${(share * 100).toFixed(0).padStart(3)}% ` +
      `${(bytes / MB).toFixed(1)}/${(totalBytes / MB).toFixed(1)} MB ${(bytesPerSecond / MB).toFixed(1)} MB/s`;
    this.#terminal.write(`\r\x1b[2K${line}`);
    this.#drawn = true;
  }

  done(): void {
    if (this.#drawn) this.#terminal.write('\r\x1b[2K');
    this.#drawn = false;
    this.#nextDrawAt = performance.now() + REDRAW_MS;
  }
}

/** A bar on stderr when it is a terminal, else none (no bar in logs, pipes and tests). */
export function terminalProgressBar(): TerminalProgressBar | undefined {
  return process.stderr.isTTY ? new TerminalProgressBar(process.stderr) : undefined;
}
