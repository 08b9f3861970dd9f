/**
 * True for SQLite's "database is locked" (SQLITE_BUSY and its extended codes),
 * also when the error crossed a worker boundary and kept only its message.
 * Pure.
 */
export function isSqliteBusy(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('SQLITE_BUSY')) return true;
  return /\bdatabase is locked\b/i.test(String((err as Error | null)?.message ?? err));
}
