import type { Database } from 'better-sqlite3';
import { triggerName, valueColumn } from './names.ts';
import type { TableSchema } from './table-schema.ts';
import { capturedColumns } from './trigger-sql.ts';

/**
 * Registered tables that are gone under their name but whose capture trigger now
 * sits on another table: `ALTER TABLE a RENAME TO b` rewrites the triggers of `a`
 * to be `ON b`. Old name -> new name.
 */
export function tableRenames(
  db: Database,
  registry: ReadonlyMap<string, TableSchema>,
  current: ReadonlySet<string>,
): Map<string, string> {
  const onTable = db
    .prepare("SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name = ?")
    .pluck();
  const out = new Map<string, string>();
  for (const name of registry.keys()) {
    if (current.has(name)) continue;
    const to = onTable.get(triggerName(name, 'insert')) as string | undefined;
    if (to !== undefined && to !== name && current.has(to) && !registry.has(to)) out.set(name, to);
  }
  return out;
}

/**
 * Columns of a table renamed since its capture was installed, new name -> old name.
 * `ALTER TABLE ... RENAME COLUMN` rewrites our insert trigger, so each `val_<old>`
 * target now takes `NEW.<new>`: an exact record. A table rebuilt by a tool
 * (`sqlite-utils transform --rename`) has fresh triggers, nothing to read: a column
 * gone and a new one in its place (same position, same column count) count as a rename.
 * The reconciler checks every row against the index under the old names, so a wrong
 * guess costs republished rows, never lost ones.
 */
export function columnRenames(
  previous: TableSchema,
  current: TableSchema,
  insertTrigger: string | undefined,
): Map<string, string> {
  const was = capturedColumns(previous);
  const now = capturedColumns(current);
  const gone = new Set(was.filter((c) => !now.includes(c)));
  const added = new Set(now.filter((c) => !was.includes(c)));
  const out = new Map<string, string>();
  if (gone.size === 0 || added.size === 0) return out;
  for (const [target, source] of triggerPairs(insertTrigger)) {
    for (const old of gone) {
      if (target === valueColumn(old) && added.has(source)) {
        out.set(source, old);
        gone.delete(old);
        added.delete(source);
      }
    }
  }
  if (was.length === now.length) {
    for (let i = 0; i < was.length; i++) {
      const old = was[i]!;
      const neu = now[i]!;
      if (gone.has(old) && added.has(neu)) out.set(neu, old);
    }
  }
  return out;
}

const IDENT = /"((?:[^"]|"")*)"/gu;

/** The `(target, NEW.source)` pairs of the insert trigger's logging INSERT ... VALUES. */
function triggerPairs(sql: string | undefined): [string, string][] {
  if (sql === undefined) return [];
  const values = sql.indexOf('VALUES (NEW.');
  if (values < 0) return [];
  const open = sql.lastIndexOf('(', values);
  const targetList = sql.slice(open + 1, sql.lastIndexOf(')', values));
  const valueList = sql.slice(values + 'VALUES ('.length);
  const targets = [...targetList.matchAll(IDENT)].map((m) => m[1]!.replaceAll('""', '"'));
  const sources: string[] = [];
  for (const m of valueList.matchAll(/NEW\.(?:"((?:[^"]|"")*)"|([^\s,()"]+))/gu)) {
    sources.push(m[1] !== undefined ? m[1].replaceAll('""', '"') : m[2]!);
  }
  return targets.slice(0, sources.length).map((t, i) => [t, sources[i]!]);
}
