import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startCheckpointer } from '../../src/db/checkpointer.ts';
import { openDatabase, type Storage } from '../../src/db/index.ts';

const dirs: string[] = [];
const opened: Storage[] = [];
function databasePath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-checkpoint-'));
  dirs.push(dir);
  return join(dir, 'gatehouse.db');
}

afterEach(() => {
  for (const storage of opened.splice(0)) storage.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

async function until(condition: () => boolean): Promise<void> {
  for (let tries = 0; !condition(); tries++) {
    if (tries > 400) throw new Error('condition not met within 2 s');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** About 1.2 MB of rows in group-commit batches: some 300 WAL pages, far below either autocheckpoint threshold. */
async function writeRows(storage: Storage): Promise<void> {
  storage.sqlite.exec('CREATE TABLE bulk (v TEXT NOT NULL)');
  const insert = storage.sqlite.prepare('INSERT INTO bulk (v) VALUES (?)');
  for (let i = 0; i < 60; i++) storage.commits.write(() => insert.run(`${i}`.padEnd(20_000, 'x')));
  await storage.commits.durable();
}

describe('WAL checkpoints', () => {
  it('are copied into the database file by the checkpointer thread, the serving connection keeping only a backstop', async () => {
    const path = databasePath();
    const checkpoints: number[] = [];
    const storage = openDatabase(path, {
      checkpointer: { intervalMs: 10, onCheckpoint: ({ checkpointed }) => checkpoints.push(checkpointed) },
    });
    opened.push(storage);
    expect(storage.sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(16_000);
    const before = statSync(path).size;
    await writeRows(storage);
    // Only a checkpoint writes pages into the database file, and 300 pages cross no threshold of the serving connection.
    await until(() => statSync(path).size > before + 1_000_000 && checkpoints.some((pages) => pages > 250));
    expect(storage.sqlite.prepare('SELECT COUNT(*) AS n FROM bulk').get()).toEqual({ n: 60 });
  });

  it('tells the app when the thread fails (here: no database at that path), so it can say checkpoints fall back to commits', async () => {
    const failure = await new Promise<Error>((resolve) => {
      startCheckpointer(join(databasePath(), 'missing.db'), { onError: resolve });
    });
    expect(failure.message).toMatch(/directory does not exist|unable to open/);
  });

  it('run inside commits every 4000 pages without the thread (the CLI), so the same rows stay in the WAL', async () => {
    const path = databasePath();
    const storage = openDatabase(path);
    opened.push(storage);
    expect(storage.sqlite.pragma('wal_autocheckpoint', { simple: true })).toBe(4000);
    const before = statSync(path).size;
    await writeRows(storage);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(statSync(path).size).toBeLessThan(before + 100_000);
  });
});
