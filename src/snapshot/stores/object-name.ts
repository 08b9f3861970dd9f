import { randomBytes } from 'node:crypto';
import { SnapshotStoreError } from '../snapshot-store.ts';

/**
 * Object names are flat and portable across every backend (file systems, S3
 * keys, URL path segments): no escaping anywhere, no directory traversal.
 */
const VALID_NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$/;

/** Suffix of temporary objects; together with the leading "." it keeps them out of `list()`. */
const TEMP_SUFFIX = '.partial';

/** Throws `ERR_SNAPSHOT_STORE_INVALID_NAME` unless `name` follows the rules in snapshot-store.ts. */
export function assertObjectName(backend: string, operation: string, name: string): void {
  if (!VALID_NAME.test(name)) {
    throw new SnapshotStoreError({
      code: 'ERR_SNAPSHOT_STORE_INVALID_NAME',
      backend,
      operation,
      detail: `invalid object name ${JSON.stringify(name)} (1-200 of A-Z a-z 0-9 . _ -, not starting with ".")`,
    });
  }
}

/** Whether a stored entry is a regular object that `list()` may return. */
export function isListableName(name: string): boolean {
  return VALID_NAME.test(name);
}

/**
 * A fresh temporary name next to the final one: `.<name>.<random>.partial`.
 * Random so that two writers of the same name never share a temporary object.
 */
export function temporaryName(name: string): string {
  return `.${name}.${randomBytes(6).toString('hex')}${TEMP_SUFFIX}`;
}
