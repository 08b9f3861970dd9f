import { ConfigError } from './config-error.ts';

/**
 * Keys that HarmonyLite's documentation shows but HarmonyLite itself never read
 * (its loader ignored unknown keys, so the documented blocks "worked" by doing
 * nothing). Each is accepted here under the meaning the documentation gives it,
 * by rewriting it to our key before validation; giving both spellings is an error.
 */
interface Alias {
  /** Dotted path as documented. */
  readonly from: string;
  /** Dotted path of our key. */
  readonly to: string;
  /** How the documented value becomes ours; `merge` joins it with a value of ours given too. */
  readonly convert?: (value: unknown) => unknown;
  readonly merge?: boolean;
}

const MIB = 1024 * 1024;

export const CONFIG_ALIASES: readonly Alias[] = [
  { from: 'nats.tls_ca_file', to: 'nats.ca_file' },
  { from: 'nats.tls_cert_file', to: 'nats.cert_file' },
  { from: 'nats.tls_key_file', to: 'nats.key_file' },
  // "Tables to completely ignore": never captured nor applied, which is exclude_tables.
  { from: 'sharding.ignore_tables', to: 'exclude_tables', merge: true },
  // "Max bytes per NATS message payload (default 1MB)": the embedded server's max_payload.
  {
    from: 'replication.max_payload_mb',
    to: 'nats.max_payload',
    convert: (v) => (typeof v === 'number' || typeof v === 'bigint' ? Number(v) * MIB : v),
  },
];

type Table = Record<string, unknown>;

const isTable = (v: unknown): v is Table => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Rewrites documented-only keys of a parsed TOML document to ours, in place. */
export function applyConfigAliases(raw: unknown): void {
  if (!isTable(raw)) return;
  for (const alias of CONFIG_ALIASES) {
    const fromPath = alias.from.split('.');
    const fromKey = fromPath.pop() ?? '';
    const fromTable = fromPath.reduce<unknown>((t, k) => (isTable(t) ? t[k] : undefined), raw);
    if (!isTable(fromTable) || !Object.hasOwn(fromTable, fromKey)) continue;
    const value = alias.convert ? alias.convert(fromTable[fromKey]) : fromTable[fromKey];
    delete fromTable[fromKey];
    // An emptied documented-only table ([sharding], [replication]) is not a key of ours.
    if (fromPath.length > 0 && Object.keys(fromTable).length === 0) {
      const parent = fromPath
        .slice(0, -1)
        .reduce<unknown>((t, k) => (isTable(t) ? t[k] : undefined), raw) as Table;
      delete parent[fromPath.at(-1) ?? ''];
    }
    const toPath = alias.to.split('.');
    const toKey = toPath.pop() ?? '';
    let target: Table = raw;
    for (const k of toPath) {
      if (!isTable(target[k])) target[k] = {};
      target = target[k] as Table;
    }
    if (Object.hasOwn(target, toKey)) {
      if (alias.merge === true && Array.isArray(target[toKey]) && Array.isArray(value)) {
        target[toKey] = [...(target[toKey] as unknown[]), ...(value as unknown[])];
        continue;
      }
      throw new ConfigError(
        `config keys "${alias.from}" and "${alias.to}" are the same setting: give only one`,
        { hint: `remove "${alias.from}" (HarmonyLite's documentation name for "${alias.to}")` },
      );
    }
    target[toKey] = value;
  }
}
