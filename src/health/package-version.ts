import { readFileSync } from 'node:fs';

let cached: string | undefined;

/**
 * The version in harmonylite's package.json: two levels up from src/health,
 * three from dist/src/health. "unknown" when neither is found. Read once.
 */
export function packageVersion(): string {
  if (cached !== undefined) return cached;
  cached = 'unknown';
  for (const rel of ['../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version?: string;
      };
      if (pkg.name === 'harmonylite' && pkg.version !== undefined) {
        cached = pkg.version;
        break;
      }
    } catch {
      // not at this level
    }
  }
  return cached;
}
