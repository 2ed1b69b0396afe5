import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { createCommits } from '../../src/db/commits.ts';

const dirs: string[] = [];
function database(): { writer: Database.Database; reader: Database.Database } {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-commits-'));
  dirs.push(dir);
  const writer = new Database(join(dir, 'test.db'));
  writer.pragma('journal_mode = WAL');
  writer.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  return { writer, reader: new Database(join(dir, 'test.db'), { readonly: true }) };
}
const count = (db: Database.Database): number => (db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n;

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('group commit with acknowledgement deferred to the response', () => {
  it('runs writes at once but makes them visible to other connections only when durable() resolves', async () => {
    const { writer, reader } = database();
    const commits = createCommits(writer);
    const insert = writer.prepare('INSERT INTO t (v) VALUES (?)');
    commits.write(() => insert.run('a'));
    commits.write(() => insert.run('b'));
    expect(count(writer)).toBe(2);
    expect(count(reader)).toBe(0);
    await commits.durable();
    expect(count(reader)).toBe(2);
    expect(writer.inTransaction).toBe(false);
  });

  it('undoes only the statement that failed, and still commits the others of its batch', async () => {
    const { writer, reader } = database();
    const commits = createCommits(writer);
    const insert = writer.prepare('INSERT INTO t (id, v) VALUES (?, ?)');
    commits.write(() => insert.run(1, 'kept'));
    expect(() => commits.write(() => insert.run(1, 'duplicate'))).toThrow(/UNIQUE/);
    commits.write(() => insert.run(2, 'also kept'));
    await commits.durable();
    expect(reader.prepare('SELECT v FROM t ORDER BY id').all()).toEqual([{ v: 'kept' }, { v: 'also kept' }]);
  });

  it('joins a transaction someone else has open instead of opening a batch', async () => {
    const { writer, reader } = database();
    const commits = createCommits(writer);
    const insert = writer.prepare('INSERT INTO t (v) VALUES (?)');
    writer.transaction(() => commits.write(() => insert.run('inside')))();
    expect(count(reader)).toBe(1);
    await expect(commits.durable()).resolves.toBeUndefined();
  });

  it('rejects durable() when the commit fails, so no response acknowledges a lost write', async () => {
    const { writer } = database();
    const commits = createCommits(writer);
    writer.exec(
      'CREATE TABLE parent (id INTEGER PRIMARY KEY); CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)',
    );
    writer.pragma('foreign_keys = ON');
    // A deferred foreign-key violation is only detected at COMMIT.
    commits.write(() => writer.prepare('INSERT INTO child (p) VALUES (42)').run());
    await expect(commits.durable()).rejects.toThrow(/FOREIGN KEY/);
    expect(writer.inTransaction).toBe(false);
    expect((writer.prepare('SELECT COUNT(*) AS n FROM child').get() as { n: number }).n).toBe(0);
  });

  it('commits an open batch when the connection closes, and its timer then does nothing', async () => {
    const { writer, reader } = database();
    const commits = createCommits(writer);
    commits.write(() => writer.prepare('INSERT INTO t (v) VALUES (?)').run('last'));
    const durable = commits.durable();
    commits.flush();
    writer.close();
    await expect(durable).resolves.toBeUndefined();
    await new Promise((resolve) => setTimeout(resolve, 5));
    expect(count(reader)).toBe(1);
  });

  it('commits records written eventually without holding any response, and makes a batch durable once a durable write joins it', async () => {
    const { writer, reader } = database();
    const commits = createCommits(writer);
    const insert = writer.prepare('INSERT INTO t (v) VALUES (?)');
    for (const v of ['a', 'b']) commits.writeEventually(() => insert.run(v));
    expect(count(writer)).toBe(2);
    // Nothing waits for these: the response hook sees nothing pending; they still commit on the short window.
    expect(commits.pending()).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(writer.inTransaction).toBe(false);
    expect(count(reader)).toBe(2);
    // The connection is back to fsyncing every commit.
    expect(writer.pragma('synchronous', { simple: true })).not.toBe(1);

    commits.writeEventually(() => insert.run('c'));
    commits.write(() => insert.run('d'));
    expect(commits.pending()).toBe(true);
    await commits.durable();
    expect(count(reader)).toBe(4);
  });

  it('checkpoints the WAL every 4000 pages rather than every 1000, so token writes rewrite index pages there instead of in the file', () => {
    const { writer } = database();
    createCommits(writer);
    expect(writer.pragma('wal_autocheckpoint', { simple: true })).toBe(4000);
  });

  it('resolves durable() at once when nothing is pending', async () => {
    const { writer } = database();
    await expect(createCommits(writer).durable()).resolves.toBeUndefined();
  });
});
