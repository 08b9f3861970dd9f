/**
 * Keeps config.example.toml and defaultConfig() identical: every key present, with
 * the default value, a comment, and the "(HarmonyLite-TS only)" mark on keys of ours.
 */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { defaultConfig } from '../../src/config/config.ts';
import { loadConfig } from '../../src/config/load-config.ts';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const examplePath = resolve(root, 'config.example.toml');
const exampleText = readFileSync(examplePath, 'utf8');
const OURS_MARK = '(HarmonyLite-TS only)';

/** Dotted paths of every non-table value under `value` ("nats.urls", "snapshot.s3.bucket"). */
function leafKeys(value: unknown, prefix = ''): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return [prefix];
  return Object.entries(value).flatMap(([k, v]) => leafKeys(v, prefix === '' ? k : `${prefix}.${k}`));
}

/** Each key line of the TOML text, as a dotted path, with the comment lines right above it. */
function keyLines(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  let section = '';
  let comments: string[] = [];
  for (const line of text.split('\n').map((l) => l.trim())) {
    const header = /^\[([A-Za-z0-9_.]+)\]$/.exec(line);
    const key = /^([A-Za-z0-9_]+)\s*=/.exec(line);
    if (line.startsWith('#')) {
      comments.push(line);
      continue;
    }
    if (header?.[1] !== undefined) section = header[1];
    if (key?.[1] !== undefined) keys.set(section === '' ? key[1] : `${section}.${key[1]}`, comments);
    comments = [];
  }
  return keys;
}

/** Leaf paths whose doc comment in config.ts says "(ours)", by interface → section. */
function oursKeys(): string[] {
  const source = readFileSync(resolve(root, 'src/config/config.ts'), 'utf8');
  const sections: Record<string, string> = {
    Config: '',
    ReplicationLogConfig: 'replication_log',
    NatsConfig: 'nats',
    SnapshotConfig: 'snapshot',
  };
  const defaults = defaultConfig() as unknown as Record<string, unknown>;
  const found: string[] = [];
  for (const m of source.matchAll(/export interface (\w+) \{([^]*?)\n\}/g)) {
    const section = sections[m[1] ?? ''];
    if (section === undefined) continue;
    for (const f of (m[2] ?? '').matchAll(/\/\*\*\s*\(ours\)[^]*?\*\/\s*(\w+)\??:/g)) {
      const path = section === '' ? (f[1] ?? '') : `${section}.${f[1] ?? ''}`;
      const value = path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], defaults);
      found.push(...leafKeys(value, path));
    }
  }
  return found;
}

describe('config.example.toml', () => {
  it('loads and equals defaultConfig() except db_path, which names a sample database next to it', () => {
    const loaded = loadConfig(examplePath);
    assert.equal(loaded.db_path, resolve(root, 'example.db'));
    assert.deepEqual({ ...loaded, db_path: '' }, defaultConfig());
  });

  it('spells out every key of defaultConfig(), in its section, each with a comment', () => {
    const lines = keyLines(exampleText);
    const leaves = leafKeys(defaultConfig());
    for (const key of leaves) {
      const comments = lines.get(key);
      assert.ok(comments !== undefined, `config.example.toml lacks the key "${key}"`);
      assert.ok(comments.length > 0, `config.example.toml has no comment right above "${key}"`);
    }
    assert.deepEqual([...lines.keys()].sort(), [...leaves].sort(), 'keys of the file and of defaultConfig()');
  });

  it('marks every key that is ours as "(HarmonyLite-TS only)"', () => {
    const ours = oursKeys();
    // Guards the parsing of config.ts itself: these are known to be ours.
    for (const key of ['include_tables', 'nats.token', 'snapshot.keep', 'snapshot.local.path']) {
      assert.ok(
        ours.includes(key),
        `expected "${key}" among the (ours) keys found in config.ts: ${ours.join(', ')}`,
      );
    }
    const lines = keyLines(exampleText);
    for (const key of ours) {
      const comment = (lines.get(key) ?? []).join('\n');
      assert.ok(comment.includes(OURS_MARK), `the comment above "${key}" should say ${OURS_MARK}`);
    }
  });

  it('notes that prometheus and health_check bind to loopback, unlike HarmonyLite', () => {
    const lines = keyLines(exampleText);
    for (const key of ['prometheus.bind', 'health_check.bind']) {
      const comment = (lines.get(key) ?? []).map((l) => l.replace(/^#\s*/, '')).join(' ');
      assert.match(comment, /loopback/, `comment above ${key}`);
      assert.match(comment, /HarmonyLite bound all interfaces/, `comment above ${key}`);
    }
  });
});
