/**
 * A row's values as kept in our own tables (parked changes, the conflict log):
 * the same CBOR as a change record's `Row`, so every storage class round-trips.
 * Pure.
 */
import { Encoder } from 'cbor-x';
import './change-batch-codec.ts'; // registers the REAL tag
import { toWire, type CapturedValue, type WireValue } from './sql-value.ts';

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

export function encodeRow(row: Record<string, WireValue>): Uint8Array {
  return encoder.encode(row);
}

export function decodeRow(bytes: Uint8Array): Record<string, WireValue> {
  return encoder.decode(bytes) as Record<string, WireValue>;
}

/** Column values as read from a table (safe integers) to a row map. */
export function rowOf(
  columns: readonly string[],
  values: readonly CapturedValue[],
): Record<string, WireValue> {
  const row: Record<string, WireValue> = {};
  for (let i = 0; i < columns.length; i++) row[columns[i]!] = toWire(values[i]!);
  return row;
}
