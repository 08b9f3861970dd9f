/**
 * WriterQueue: one job at a time, urgent jobs before queued normal ones, FIFO
 * within a lane; a failing job rejects its caller and the queue goes on.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WriterQueue } from '../../src/sqlite/writer-queue.ts';

test('runs one job at a time, urgent lane first; a failed job does not stop the queue', async () => {
  const q = new WriterQueue();
  const events: string[] = [];
  let release!: () => void;
  const first = q.run(() => new Promise<void>((r) => (release = r)).then(() => events.push('job 1')));
  const normal = q.run(() => events.push('job 2 (normal)'));
  const failing = q.run(() => {
    events.push('job 3 (urgent, fails)');
    throw new Error('boom');
  }, 'urgent');
  assert.equal(q.depth, 3);
  release();
  await first;
  await assert.rejects(failing, /boom/);
  await normal;
  await q.drain();
  assert.deepEqual(events, ['job 1', 'job 3 (urgent, fails)', 'job 2 (normal)']);
  assert.equal(q.depth, 0);
});
