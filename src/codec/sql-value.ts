/**
 * SQLite values on the wire, keeping their exact storage class (issue 2: values
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

export type WireValue = null | bigint | number | string | Uint8Array | SqlReal;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const MIN_SAFE = BigInt(Number.MIN_SAFE_INTEGER);

/** A value as read with safeIntegers (INTEGER = bigint, REAL = number) to its wire form. */
export function toWire(v: SqlValue): WireValue {
  if (typeof v === 'bigint') return v <= MAX_SAFE && v >= MIN_SAFE ? Number(v) : v;
  if (typeof v === 'number' && (Number.isInteger(v) || Object.is(v, -0))) return new SqlReal(v);
  return v;
}

/** A decoded wire value to what better-sqlite3 binds with the original storage class. */
export function fromWire(v: unknown): SqlValue {
  if (typeof v === 'number') return Number.isInteger(v) ? BigInt(v) : v;
  if (v instanceof SqlReal) return v.value;
  if (v === null || typeof v === 'bigint' || typeof v === 'string' || v instanceof Uint8Array) return v;
  throw new TypeError(`not an SQLite value: ${describe(v)}`);
}

export function isWireValue(v: unknown): boolean {
  return (
    v === null ||
    typeof v === 'number' ||
    typeof v === 'bigint' ||
    typeof v === 'string' ||
    v instanceof Uint8Array ||
    v instanceof SqlReal
  );
}

export function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return 'an array';
  if (v instanceof Uint8Array) return 'bytes';
  return typeof v === 'object' ? (v === null ? 'null' : 'a map') : typeof v;
}
