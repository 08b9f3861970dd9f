// Development and tests only: worker threads do not inherit tsx's loader, so the
// shard worker's TypeScript source is loaded through tsx here. Compiled builds
// load dist/workers/shard-worker.js directly.
import { register } from 'tsx/esm/api';

register();
const worker = await import('./shard-worker.ts');

export const { apply, position, deadLetter, close } = worker;
