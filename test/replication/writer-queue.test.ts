/**
 * WriterQueue: one job at a time, urgent jobs before queued normal ones, FIFO
 * within a lane unless weighted; a failing job rejects its caller and the
 * queue goes on.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WriterQueue } from '../../src/replication/writer-queue.ts';

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

test('the heaviest queued normal job goes next; an unweighted job and ties keep their place', async () => {
  const q = new WriterQueue();
  const events: string[] = [];
  let release!: () => void;
  const weights = { a: 1, b: 5, c: 4 };
  const jobs = [
    q.run(() => new Promise<void>((r) => (release = r))),
    q.run(
      () => events.push('a'),
      'normal',
      () => weights.a,
    ),
    q.run(
      () => events.push('b'),
      'normal',
      () => weights.b,
    ),
    q.run(
      () => events.push('c'),
      'normal',
      () => weights.c,
    ),
    q.run(() => events.push('cleanup')),
    q.run(
      () => events.push('d'),
      'normal',
      () => 9,
    ),
  ];
  weights.c = 8; // read when the choice is made, not when queued
  release();
  await Promise.all(jobs);
  assert.deepEqual(events, ['c', 'b', 'a', 'cleanup', 'd']);
});
