import type { ErrorVerdict } from './store-operation.ts';
import { errorMessage } from '../../error-message.ts';

/** Codes of a failed connection attempt: the server is down, unknown or filtered. */
const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ETIMEDOUT',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** Codes of a connection lost mid-operation: worth another try. */
const DROPPED_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

/**
 * The first string `code` (ECONNREFUSED, ENOSPC, UND_ERR_SOCKET, …) found on
 * `err`, along its `cause` chain, or in an AggregateError's `errors` (Node's
 * happy-eyeballs connect reports one error per address).
 */
export function systemErrorCode(err: unknown, depth = 0): string | undefined {
  if (typeof err !== 'object' || err === null || depth > 6) return undefined;
  const { code, cause, errors } = err as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof code === 'string' && /^(E[A-Z]+|UND_ERR_[A-Z_]+)$/.test(code)) return code;
  if (Array.isArray(errors)) {
    for (const e of errors) {
      const c = systemErrorCode(e, depth + 1);
      if (c !== undefined) return c;
    }
  }
  return systemErrorCode(cause, depth + 1);
}

/**
 * The verdict for operating-system and socket errors common to all backends,
 * or undefined when `err` carries none of them. `where` names the server
 * ("127.0.0.1:9000") or path for the message and must not contain secrets.
 */
export function classifySystemError(err: unknown, where: string): ErrorVerdict | undefined {
  const code = systemErrorCode(err);
  if (code === undefined) return undefined;
  if (CONNECT_CODES.has(code)) {
    return {
      code: 'ERR_SNAPSHOT_STORE_UNREACHABLE',
      detail: `cannot connect to ${where} (${code})`,
      transient: true,
    };
  }
  if (code === 'ENOTFOUND') {
    return {
      code: 'ERR_SNAPSHOT_STORE_UNREACHABLE',
      detail: `unknown host in ${where} (${code})`,
      transient: false,
    };
  }
  if (DROPPED_CODES.has(code)) {
    return { code: 'ERR_SNAPSHOT_STORE', detail: `connection to ${where} lost (${code})`, transient: true };
  }
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return {
      code: 'ERR_SNAPSHOT_STORE_NO_SPACE',
      detail: `no space left (${describe(err)})`,
      transient: false,
    };
  }
  if (code === 'EACCES' || code === 'EPERM') {
    return {
      code: 'ERR_SNAPSHOT_STORE_AUTH',
      detail: `permission denied (${describe(err)})`,
      transient: false,
    };
  }
  return undefined;
}

function describe(err: unknown): string {
  return errorMessage(err);
}
