import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TerminalProgressBar } from '../../src/cli/progress-bar.ts';
import { createLogger } from '../../src/logger.ts';
import { TransferProgress } from '../../src/snapshot/transfer-progress.ts';
import { LogCapture } from '../helpers/node-harness.ts';

const MB = 1024 * 1024;

/** A stand-in terminal that records what is drawn. */
function fakeTerminal(): { stream: NodeJS.WriteStream; text: () => string } {
  let text = '';
  const stream = {
    isTTY: true,
    write: (chunk: string) => {
      text += chunk;
      return true;
    },
  } as unknown as NodeJS.WriteStream;
  return { stream, text: () => text };
}

describe('TransferProgress', () => {
  it('logs bytes and MB/s of a long transfer; the CLI draws a bar on a terminal and erases it at the end', async () => {
    const logs = new LogCapture();
    const terminal = fakeTerminal();
    const progress = new TransferProgress({
      operation: 'upload',
      objectName: 'snapshot-1.db',
      totalBytes: 100 * MB,
      logger: createLogger({ verbose: false, format: 'json', destination: logs }),
      logIntervalMs: 100,
      display: new TerminalProgressBar(terminal.stream),
    });
    for (let i = 1; i <= 10; i++) {
      progress.update(i * 10 * MB);
      await new Promise((r) => setTimeout(r, 40));
    }
    progress.done();
    const lines = logs.records.filter((r) => r.msg === 'snapshot upload progress');
    assert.ok(lines.length >= 2, `several progress lines, saw ${lines.length}`);
    const last = lines.at(-1)!;
    assert.equal(last.object, 'snapshot-1.db');
    assert.equal(last.total_bytes, 100 * MB);
    assert.ok(typeof last.mb_per_s === 'number' && last.mb_per_s > 0);
    assert.match(terminal.text(), /upload snapshot-1\.db \[#+-*\] +\d+% [\d.]+\/100\.0 MB [\d.]+ MB\/s/);
    assert.ok(terminal.text().endsWith('\r\x1b[2K'), 'the bar is erased');
  });

  it('a short transfer logs nothing and draws nothing without a display', () => {
    const logs = new LogCapture();
    const progress = new TransferProgress({
      operation: 'download',
      objectName: 'x.db',
      totalBytes: 10,
      logger: createLogger({ verbose: false, format: 'json', destination: logs }),
    });
    progress.update(10);
    progress.done();
    assert.equal(logs.records.length, 0);
  });
});
