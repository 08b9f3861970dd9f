/**
 * SQLite values on the wire, keeping their exact storage class (values
 * keep their type and value through capture and replay).
 *
 * better-sqlite3 binds every JS number as REAL, and CBOR collapses integral
 * doubles (2.0, -0.0) to integers, so: integers travel as CBOR integers and are
 * bound back as BigInt; REALs travel as floats, and a REAL whose value is
 * integral travels wrapped in `SqlReal` (a CBOR tag). Pure.
 */

export type SqlValue = null | bigint | number | string | Uint8Array;

/** A REAL whose value would otherwise be read back as an integer. */
export class SqlReal {
  constructor(readonly value: number) {}
}

/**
 * A TEXT value whose bytes are not valid UTF-8 (`CAST(x'ff' AS TEXT)`, a Latin-1
 * string written by a client that does not check): a JS string cannot hold it
 * (decoding replaces each bad byte with U+FFFD), so it travels as its exact
 * bytes (a CBOR tag) and is written back as TEXT with `CAST(? AS TEXT)`.
 */
export class SqlTextBytes {
  constructor(readonly bytes: Uint8Array) {}
}

/** A captured value: as read with safe integers, or TEXT kept as its bytes. */
export type CapturedValue = SqlValue | SqlTextBytes;

export type WireValue = null | bigint | number | string | Uint8Array | SqlReal | SqlTextBytes;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);

/** A value as read with safeIntegers (INTEGER = bigint, REAL = number) to its wire form. */
export function toWire(v: CapturedValue): WireValue {
  if (typeof v === 'bigint') return v <= MAX_SAFE && v >= MIN_SAFE ? Number(v) : v;
  if (typeof v === 'number' && (Number.isInteger(v) || Object.is(v, -0))) return new SqlReal(v);
  return v;
}

/**
 * A decoded wire value to what better-sqlite3 binds with the original storage
 * class; for `SqlTextBytes` its bytes, bound where `placeholder(v)` says.
 */
export function fromWire(v: unknown): SqlValue {
  if (typeof v === 'number') return Number.isInteger(v) ? BigInt(v) : v;
  if (v instanceof SqlReal) return v.value;
  if (v instanceof SqlTextBytes) return v.bytes;
  if (v === null || typeof v === 'bigint' || typeof v === 'string' || v instanceof Uint8Array) return v;
  throw new TypeError(`not an SQLite value: ${describe(v)}`);
}

/**
 * The SQL expression a wire value is bound through: `CAST(? AS TEXT)` for TEXT
 * carried as bytes (the bytes become TEXT unchanged, no UTF-8 check), `?` for
 * everything else. The applier's hook: a row holding any `SqlTextBytes`
 * (`hasTextBytes`) is written by statements built with these placeholders.
 */
export function placeholder(v: unknown): '?' | 'CAST(? AS TEXT)' {
  return v instanceof SqlTextBytes ? 'CAST(? AS TEXT)' : '?';
}

/** True when a change's row holds TEXT carried as bytes (rare: the applier's slow path). */
export function hasTextBytes(row: Readonly<Record<string, unknown>>): boolean {
  for (const k in row) if (row[k] instanceof SqlTextBytes) return true;
  return false;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A TEXT value read by better-sqlite3 (lossy) and, only when it holds U+FFFD
 * (the mark of a replaced byte, or a real U+FFFD), the value's bytes: the
 * bytes when they are not valid UTF-8, else the string.
 */
export function exactText(s: string, bytes: () => Uint8Array): string | SqlTextBytes {
  if (!s.includes('\uFFFD')) return s;
  const b = bytes();
  try {
    utf8.decode(b);
    return s;
  } catch {
    return new SqlTextBytes(b);
  }
}

export function isWireValue(v: unknown): boolean {
  return (
    v === null ||
    typeof v === 'number' ||
    typeof v === 'bigint' ||
    typeof v === 'string' ||
    v instanceof Uint8Array ||
    v instanceof SqlReal ||
    v instanceof SqlTextBytes
  );
}

export function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v === 'object' ? (v === null ? 'null' : 'a map') : typeof v;
}
