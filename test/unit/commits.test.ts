import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { createCommits, type SyncFile } from '../../src/db/commits.ts';

const dirs: string[] = [];
function database(): { writer: Database.Database; reader: Database.Database; path: string } {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-commits-'));
  dirs.push(dir);
  const writer = new Database(join(dir, 'test.db'));
  writer.pragma('journal_mode = WAL');
  writer.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
  return { writer, reader: new Database(join(dir, 'test.db'), { readonly: true }), path: join(dir, 'test.db') };
}
const count = (db: Database.Database): number => (db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n;

/** A WAL sync the test completes by hand; records the file each one was asked for. */
function gatedSyncs(): { sync: SyncFile; files: string[]; release(): void } {
  const files: string[] = [];
  const waiting: (() => void)[] = [];
  return {
    files,
    sync: (fd) => {
      files.push(readlinkSync(`/proc/self/fd/${fd}`));
      return new Promise((resolve) => waiting.push(resolve));
    },
    release: () => waiting.shift()?.(),
  };
}

async function until(condition: () => boolean): Promise<void> {
  for (let tries = 0; !condition(); tries++) {
    if (tries > 200) throw new Error('condition not met within 1 s');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Open descriptors of this process on a commits test's WAL file. */
const walDescriptors = (): number =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return /gatehouse-commits-.*-wal$/.test(readlinkSync(`/proc/self/fd/${fd}`));
    } catch {
      return false;
    }
  }).length;

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
    commits.close();
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

  it('acknowledges a durable write only once the WAL holding it is synced, and keeps the connection at synchronous=FULL outside batches', async () => {
    const { writer, reader } = database();
    const syncs = gatedSyncs();
    const commits = createCommits(writer, syncs.sync);
    commits.write(() => writer.prepare('INSERT INTO t (v) VALUES (?)').run('x'));
    let acknowledged = false;
    const durable = commits.durable().then(() => {
      acknowledged = true;
    });
    await until(() => syncs.files.length === 1);
    // Committed (another connection reads it) and back at FULL, but not yet on disk: nothing acknowledged.
    expect(count(reader)).toBe(1);
    expect(writer.pragma('synchronous', { simple: true })).toBe(2);
    expect(syncs.files[0]).toMatch(/test\.db-wal$/);
    expect(commits.pending()).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(acknowledged).toBe(false);
    syncs.release();
    await durable;
    expect(commits.pending()).toBe(false);
  });

  it('makes commits that arrive during a sync wait for the next one, and syncs them all with that one', async () => {
    const { writer } = database();
    const syncs = gatedSyncs();
    const commits = createCommits(writer, syncs.sync);
    const insert = writer.prepare('INSERT INTO t (v) VALUES (?)');
    commits.write(() => insert.run('first'));
    const first = commits.durable();
    await until(() => syncs.files.length === 1);
    // The running sync may have started before these frames were written: it cannot acknowledge them.
    commits.write(() => insert.run('second'));
    commits.flush();
    commits.write(() => insert.run('third'));
    const later = commits.durable();
    commits.flush();
    syncs.release();
    await first;
    await until(() => syncs.files.length === 2);
    expect(commits.pending()).toBe(true);
    syncs.release();
    await later;
    expect(syncs.files).toHaveLength(2);
  });

  it('waits in durable() for both an open batch of eventual writes and a durable batch still syncing before it', async () => {
    const { writer } = database();
    const syncs = gatedSyncs();
    const commits = createCommits(writer, syncs.sync);
    const insert = writer.prepare('INSERT INTO t (v) VALUES (?)');
    commits.write(() => insert.run('durable'));
    commits.flush();
    commits.writeEventually(() => insert.run('eventual'));
    let settled = false;
    const durable = commits.durable().then(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The eventual batch has committed on its window; the durable one is still waiting for its sync.
    expect(writer.inTransaction).toBe(false);
    expect(settled).toBe(false);
    syncs.release();
    await durable;
    expect(syncs.files).toHaveLength(1);
  });

  it('rejects durable() when the WAL cannot be synced, so no response acknowledges a write that may not be on disk', async () => {
    const { writer } = database();
    const commits = createCommits(writer, async () => {
      throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
    });
    commits.write(() => writer.prepare('INSERT INTO t (v) VALUES (?)').run('x'));
    await expect(commits.durable()).rejects.toThrow(/EIO/);
    expect(commits.pending()).toBe(false);
  });

  it('syncs for real by default, and closes its descriptor of the WAL on close()', async () => {
    const { writer } = database();
    const commits = createCommits(writer);
    commits.write(() => writer.prepare('INSERT INTO t (v) VALUES (?)').run('x'));
    await commits.durable();
    expect(walDescriptors()).toBe(2); // SQLite's own and the one Gatehouse syncs through
    commits.close();
    expect(walDescriptors()).toBe(1);
  });

  it('holds the write lock across event-loop turns: a second connection in the same process cannot write until the batch commits', async () => {
    const { writer, path } = database();
    const commits = createCommits(writer);
    const second = new Database(path);
    second.pragma('busy_timeout = 50');
    commits.write(() => writer.prepare('INSERT INTO t (v) VALUES (?)').run('batched'));
    // Its busy wait blocks this thread, the one that would commit the batch: it can only give up (hence one connection per process).
    expect(() => second.prepare('INSERT INTO t (v) VALUES (?)').run('second')).toThrow(/database is locked/);
    await commits.durable();
    second.prepare('INSERT INTO t (v) VALUES (?)').run('second');
    expect(count(second)).toBe(2);
    second.close();
  });

  it('resolves durable() at once when nothing is pending', async () => {
    const { writer } = database();
    await expect(createCommits(writer).durable()).resolves.toBeUndefined();
  });
});
