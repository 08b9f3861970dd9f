/**
 * The seed's change record and the structural check every received message
 * passes before anything touches the database. Pure.
 */
import { describe, isWireValue, type WireValue } from './sql-value.ts';

export const CHANGE_TYPES = ['insert', 'update', 'delete'] as const;
export type ChangeType = (typeof CHANGE_TYPES)[number];

/**
 * `{ FromNodeId, Payload: { Id, Type, TableName, Row } }`, plus `CreatedAt` (ms) of ours
 * for lag metrics and `Version`, the change's hybrid-logical-clock version (see
 * hybrid-clock.ts; 0 for a backfilled row, and for records of senders that had none).
 */
export interface ChangeRecord {
  FromNodeId: number;
  Payload: {
    Id: number;
    Type: ChangeType;
    TableName: string;
    Row: Record<string, WireValue>;
    CreatedAt: number;
    Version?: number;
  };
}

/** A message that can never apply: dead-lettered with this reason (invariant 5). */
export class MalformedMessageError extends Error {
  override readonly name = 'MalformedMessageError';
  readonly code = 'ERR_MALFORMED_MESSAGE';
}

const MAX_NAME_LENGTH = 4096;

function fail(index: number, what: string): never {
  throw new MalformedMessageError(`change ${index}: ${what}`);
}

/** An unsigned integer (what the messages below say they require), as a number. */
function num(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return v;
  if (typeof v === 'bigint' && v >= 0n && v <= BigInt(Number.MAX_SAFE_INTEGER)) return Number(v);
  return undefined;
}

/** Checks a decoded message body is a non-empty array of well-formed change records. */
export function validateChangeBatch(decoded: unknown): ChangeRecord[] {
  if (!Array.isArray(decoded))
    throw new MalformedMessageError(`not a change batch: got ${describe(decoded)}, expected an array`);
  if (decoded.length === 0) throw new MalformedMessageError('empty change batch');
  decoded.forEach((rec: unknown, i) => {
    if (typeof rec !== 'object' || rec === null || Array.isArray(rec))
      fail(i, `expected a map, got ${describe(rec)}`);
    const r = rec as Record<string, unknown>;
    const from = num(r.FromNodeId);
    if (from === undefined) fail(i, 'FromNodeId is not an unsigned integer');
    r.FromNodeId = from;
    const p = r.Payload;
    if (typeof p !== 'object' || p === null || Array.isArray(p))
      fail(i, `Payload: expected a map, got ${describe(p)}`);
    const pl = p as Record<string, unknown>;
    const id = num(pl.Id);
    if (id === undefined) fail(i, 'Payload.Id is not an unsigned integer');
    pl.Id = id;
    if (!CHANGE_TYPES.includes(pl.Type as ChangeType))
      fail(i, `Payload.Type ${JSON.stringify(String(pl.Type)).slice(0, 40)} is not insert, update or delete`);
    if (
      typeof pl.TableName !== 'string' ||
      pl.TableName.length === 0 ||
      pl.TableName.length > MAX_NAME_LENGTH
    ) {
      fail(i, 'Payload.TableName is not a table name');
    }
    const created = pl.CreatedAt === undefined ? 0 : num(pl.CreatedAt);
    if (created === undefined) fail(i, 'Payload.CreatedAt is not an unsigned integer');
    pl.CreatedAt = created;
    const version = pl.Version === undefined ? 0 : num(pl.Version);
    if (version === undefined) fail(i, 'Payload.Version is not an unsigned integer');
    pl.Version = version;
    const row = pl.Row;
    const proto = typeof row === 'object' && row !== null ? Object.getPrototypeOf(row) : undefined;
    // A plain map only: typed arrays and other decoded objects would read as columns "0", "1", ...
    if (proto !== Object.prototype && proto !== null)
      fail(i, `Payload.Row: expected a map, got ${describe(row)}`);
    const cols = Object.keys(row as Record<string, unknown>);
    if (cols.length === 0) fail(i, 'Payload.Row is empty');
    for (const col of cols) {
      if (col.length === 0 || col.length > MAX_NAME_LENGTH) fail(i, 'Payload.Row has an invalid column name');
      const v = (row as Record<string, unknown>)[col];
      if (!isWireValue(v)) fail(i, `Payload.Row.${col.slice(0, 64)} is ${describe(v)}, not an SQLite value`);
    }
  });
  return decoded as ChangeRecord[];
}
