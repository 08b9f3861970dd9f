/**
 * Splitting migration files into statements: quotes, comments and trigger
 * bodies keep their semicolons; each statement knows its line; names mentioned
 * are found quoted or not; statements a migration cannot hold are refused.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mentionedNames, refusedStatement, splitStatements } from '../../src/migration/sql-statements.ts';

describe('splitStatements', () => {
  it('splits on semicolons outside quotes, comments and trigger bodies', () => {
    const sql = `-- header; not a statement
ALTER TABLE items ADD COLUMN note TEXT DEFAULT 'a;b';
/* block; comment */ UPDATE "it;ems" SET x = 1;

CREATE TRIGGER t AFTER INSERT ON items BEGIN
  UPDATE items SET note = CASE WHEN NEW.id > 1 THEN 'x' ELSE 'y' END WHERE id = NEW.id;
  SELECT 1;
END;
INSERT INTO [odd;name] VALUES (1)`;
    const s = splitStatements(sql);
    assert.deepEqual(
      s.map((x) => x.line),
      [2, 3, 5, 9],
    );
    assert.equal(s[0]!.text, "ALTER TABLE items ADD COLUMN note TEXT DEFAULT 'a;b'");
    assert.match(s[2]!.text, /^CREATE TRIGGER t .*\n.*\n {2}SELECT 1;\nEND$/s);
    assert.equal(s[3]!.text, 'INSERT INTO [odd;name] VALUES (1)');
  });

  it('drops empty statements and comment-only text', () => {
    assert.deepEqual(splitStatements(' ;; -- nothing\n/* at all */ ;'), []);
  });
});

describe('mentionedNames', () => {
  it('finds bare and quoted identifiers, lowercased', () => {
    const names = mentionedNames(
      'ALTER TABLE "My Table" RENAME TO `Other`; DROP TABLE [x y]; UPDATE Items SET a=1',
    );
    for (const n of ['my table', 'other', 'x y', 'items']) assert.ok(names.has(n), n);
    assert.ok(!names.has('a=1'));
  });
});

describe('refusedStatement', () => {
  it('refuses transaction control, VACUUM, ATTACH, PRAGMA and our own tables', () => {
    for (const s of [
      'BEGIN',
      'commit',
      'END TRANSACTION',
      'SAVEPOINT a',
      'VACUUM',
      "ATTACH 'x' AS y",
      'PRAGMA foreign_keys = OFF',
    ])
      assert.ok(refusedStatement(s) !== undefined, s);
    assert.match(refusedStatement('DELETE FROM "__harmonylite___positions"') ?? '', /own tables/);
    assert.equal(refusedStatement('ALTER TABLE items DROP COLUMN qty'), undefined);
  });
});
