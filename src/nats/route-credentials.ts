/**
 * Route authentication of an embedded cluster from its `-cluster-peers` URLs
 * (`nats://user:password@host:port`): every member authenticates the routes
 * that reach it with the credentials its own routes carry. Pure.
 */
import { ConfigError } from '../config/config-error.ts';

export interface RouteCredentials {
  /** The peer URLs without credentials (safe to log and to write in the generated config). */
  readonly peers: string[];
  /** The credentials the peer URLs carry, if any. */
  readonly authorization?: { readonly user: string; readonly password: string };
}

export function splitRouteCredentials(peers: readonly string[]): RouteCredentials {
  const found = new Set<string>();
  const out: string[] = [];
  let authorization: { user: string; password: string } | undefined;
  for (const peer of peers) {
    let url: URL;
    try {
      url = new URL(peer);
    } catch {
      out.push(peer); // the server reports a malformed route itself
      found.add('');
      continue;
    }
    const user = decodeURIComponent(url.username);
    const password = decodeURIComponent(url.password);
    found.add(user === '' ? '' : `${user}\u0000${password}`);
    if (user !== '') authorization = { user, password };
    url.username = '';
    url.password = '';
    out.push(url.href.replace(/\/$/, ''));
  }
  if (found.size > 1) {
    throw new ConfigError('-cluster-peers: every peer URL must carry the same route credentials, or none', {
      hint: 'nats://USER:PASSWORD@host:port for every peer, the same on every node',
    });
  }
  return authorization === undefined ? { peers: out } : { peers: out, authorization };
}

/** True when a route listen address ('host:port', ':port') is reachable only from this machine. */
export function isLoopbackAddress(address: string): boolean {
  const host = address.slice(0, address.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
