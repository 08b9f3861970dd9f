import { pino, type Logger as PinoLogger, type DestinationStream } from 'pino';
import type { LoggingConfig } from './config/config.ts';

export type Logger = PinoLogger;

/** Keys whose values never reach a log line (secrets are never logged). */
const SECRET_KEYS = [
  'password',
  'user_password',
  'pass',
  'secret',
  'token',
  'session_token',
  'seed',
  'access_key',
];
const URL_KEYS = ['url', 'urls', 'server', 'servers'];
const deep = (keys: readonly string[]) => keys.flatMap((k) => [k, `*.${k}`, `*.*.${k}`, `*.*.*.${k}`]);
const REDACT = [...deep(SECRET_KEYS), ...deep(URL_KEYS)];

/**
 * `nats://user:pass@host` → `nats://user:***@host`, `https://h/p?login=u&secret=p` →
 * `…secret=***`: URLs are logged, the credentials in them never.
 */
export function redactUrl(url: string): string {
  return url
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)([^:@/]*):([^@/]*)@/i, '$1$2:***@')
    .replace(/^([a-z][a-z0-9+.-]*:\/\/)([^:@/]+)@/i, '$1***@')
    .replace(/([?&](?:secret|password|pass|token)=)[^&#]*/gi, '$1***');
}

/** Secret keys become "[redacted]"; URL keys keep their URLs without credentials. */
function censor(value: unknown, path: string[]): unknown {
  if (!URL_KEYS.includes(path[path.length - 1] ?? '')) return '[redacted]';
  if (typeof value === 'string') return redactUrl(value);
  if (Array.isArray(value)) return value.map((v) => (typeof v === 'string' ? redactUrl(v) : v));
  return value;
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRC',
  20: 'DBG',
  30: 'INF',
  40: 'WRN',
  50: 'ERR',
  60: 'FTL',
};
const OMIT = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** A human line per record: "12:00:00.000 INF message key=value ...". Cheap enough for the console. */
function consoleStream(out: NodeJS.WritableStream): DestinationStream {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      const time = new Date(rec.time as number).toISOString().slice(11, 23);
      const parts = [time, LEVEL_NAMES[rec.level as number] ?? String(rec.level), String(rec.msg ?? '')];
      for (const [k, v] of Object.entries(rec)) {
        if (OMIT.has(k)) continue;
        parts.push(
          `${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`,
        );
      }
      out.write(parts.join(' ') + '\n');
    },
  };
}

export interface LoggerOptions extends LoggingConfig {
  nodeId?: number;
  /** Defaults to stderr. */
  destination?: NodeJS.WritableStream;
}

/** The process logger: JSON (one object per line) or console format, every line carrying the node id. */
export function createLogger(options: LoggerOptions): Logger {
  const out = options.destination ?? process.stderr;
  const stream: DestinationStream =
    options.format === 'json' ? { write: (s: string) => void out.write(s) } : consoleStream(out);
  const base = options.nodeId === undefined ? {} : { node_id: options.nodeId };
  return pino({ level: options.verbose ? 'debug' : 'info', base, redact: { paths: REDACT, censor } }, stream);
}

/** A logger that discards everything, for tests and tools. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
