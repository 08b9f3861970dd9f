import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SnapshotStoreError } from '../../../src/snapshot/snapshot-store.ts';
import {
  redactSecrets,
  runStoreOperation,
  StoreOperations,
  type ErrorVerdict,
  type StoreOperation,
} from '../../../src/snapshot/stores/store-operation.ts';
import { classifySystemError } from '../../../src/snapshot/stores/system-error.ts';

function op(overrides: Partial<StoreOperation> = {}): StoreOperation {
  return {
    backend: 'test',
    operation: 'put x.db',
    retry: { attempts: 3, baseDelayMs: 1 },
    classify: (err) =>
      classifySystemError(err, 'server:1') ?? {
        code: 'ERR_SNAPSHOT_STORE',
        detail: String(err),
        transient: false,
      },
    secrets: ['hunter2-secret'],
    ...overrides,
  };
}

function systemError(code: string, message = code): Error {
  return Object.assign(new Error(message), { code });
}

describe('runStoreOperation', () => {
  it('wraps failures as SnapshotStoreError "<backend>: <operation>: <detail>" with the cause', async () => {
    const cause = systemError('ENOSPC', 'ENOSPC: no space left on device, write');
    await assert.rejects(
      runStoreOperation(op(), async () => {
        throw cause;
      }),
      (err) => {
        assert.ok(err instanceof SnapshotStoreError);
        assert.equal(err.code, 'ERR_SNAPSHOT_STORE_NO_SPACE');
        assert.equal(err.message, 'test: put x.db: no space left (ENOSPC: no space left on device, write)');
        assert.equal(err.cause, cause);
        return true;
      },
    );
  });

  it('retries connection failures and reports ERR_SNAPSHOT_STORE_UNREACHABLE at the end', async () => {
    let tries = 0;
    const fetchLike = Object.assign(new TypeError('fetch failed'), { cause: systemError('ECONNREFUSED') });
    await assert.rejects(
      runStoreOperation(op(), async () => {
        tries++;
        throw fetchLike;
      }),
      (err) => err instanceof SnapshotStoreError && err.code === 'ERR_SNAPSHOT_STORE_UNREACHABLE',
    );
    assert.equal(tries, 3);
  });

  it('finds the code inside AggregateError (happy-eyeballs connects)', () => {
    const aggregate = new AggregateError(
      [systemError('ECONNREFUSED'), systemError('ECONNREFUSED')],
      'connect failed',
    );
    assert.equal(classifySystemError(aggregate, 'h:1')?.code, 'ERR_SNAPSHOT_STORE_UNREACHABLE');
  });

  it('passes a SnapshotStoreError thrown inside through unchanged and untried again', async () => {
    let tries = 0;
    const own = new SnapshotStoreError({
      code: 'ERR_SNAPSHOT_NOT_FOUND',
      backend: 'test',
      operation: 'get x.db',
      detail: 'no such object',
    });
    await assert.rejects(
      runStoreOperation(op(), async () => {
        tries++;
        throw own;
      }),
      (err) => err === own,
    );
    assert.equal(tries, 1);
  });

  it('reports ERR_SNAPSHOT_STORE_ABORTED with the reason as cause when the signal fired', async () => {
    const controller = new AbortController();
    const reason = new Error('shutting down');
    await assert.rejects(
      runStoreOperation(op({ signal: controller.signal }), async () => {
        controller.abort(reason);
        throw systemError('ECONNRESET');
      }),
      (err) =>
        err instanceof SnapshotStoreError &&
        err.code === 'ERR_SNAPSHOT_STORE_ABORTED' &&
        err.cause === reason,
    );
  });

  it('scrubs secrets (raw and URL-encoded) from details', async () => {
    assert.equal(redactSecrets('auth a%20b:hunter2 at x', ['a b', 'hunter2']), 'auth ***:*** at x');
    await assert.rejects(
      runStoreOperation(op(), async () => {
        throw new Error('server said: bad password hunter2-secret');
      }),
      (err) =>
        err instanceof SnapshotStoreError && !err.message.includes('hunter2') && err.message.includes('***'),
    );
  });
});

describe('StoreOperations', () => {
  const classify = (err: unknown): ErrorVerdict => ({
    code: 'ERR_SNAPSHOT_STORE',
    detail: err instanceof Error ? err.message : String(err),
    transient: /reset/.test(String(err)),
  });
  const fast = { retry: { attempts: 3, baseDelayMs: 1 } };

  it('checks the object name first, names "<verb> <name>", and never runs the operation for a bad name', async () => {
    const ops = new StoreOperations('test', classify, fast);
    ops.markClosed();
    let ran = false;
    await assert.rejects(
      ops.runOnObject('put', '../escape', undefined, async () => {
        ran = true;
      }),
      (err) => err instanceof SnapshotStoreError && err.code === 'ERR_SNAPSHOT_STORE_INVALID_NAME',
    );
    assert.equal(ran, false);
    const open = new StoreOperations('test', classify, fast);
    assert.equal(await open.runOnObject('get', 'x.db', undefined, async () => 'ok'), 'ok');
  });

  it('fails every operation after markClosed with "store is closed"', async () => {
    const ops = new StoreOperations('test', classify, fast);
    assert.equal(ops.markClosed(), true);
    assert.equal(ops.markClosed(), false, 'already closed');
    assert.equal(ops.closed, true);
    await assert.rejects(
      ops.run('list', undefined, async () => []),
      (err) => err instanceof SnapshotStoreError && err.message === 'test: list: store is closed',
    );
  });

  it('starts every attempt with beginAttempt and hands its result to the operation', async () => {
    let sessions = 0;
    const ops = new StoreOperations('test', classify, { ...fast, beginAttempt: async () => ++sessions });
    const seen: number[] = [];
    const result = await ops.runOnObject('delete', 'x.db', undefined, async (session) => {
      seen.push(session);
      if (seen.length < 3) throw new Error('connection reset');
      return session;
    });
    assert.deepEqual(seen, [1, 2, 3]);
    assert.equal(result, 3);
  });

  it('reports ERR_SNAPSHOT_STORE_ABORTED for a signal that fired before the first attempt', async () => {
    const ops = new StoreOperations('test', classify, fast);
    const reason = new Error('stop');
    await assert.rejects(
      ops.run('open', AbortSignal.abort(reason), async () => undefined),
      (err) =>
        err instanceof SnapshotStoreError &&
        err.code === 'ERR_SNAPSHOT_STORE_ABORTED' &&
        err.message === 'test: open: aborted',
    );
  });
});
