// Development and tests only: worker threads do not inherit tsx's loader, so the
// snapshot worker's TypeScript source is loaded through tsx here. Compiled builds
// load snapshot-worker-thread.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./snapshot-worker-thread.ts');
