import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { type BetterSQLite3Database, drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { type Commits, createCommits } from './commits.ts';
import * as schema from './schema.ts';

export type Db = BetterSQLite3Database<typeof schema>;

export interface Storage {
  /** The drizzle handle for typed queries. */
  readonly db: Db;
  /** The raw connection, for prepared statements on hot paths (the oidc-provider adapter). */
  readonly sqlite: Database.Database;
  /** Group commit for token writes; responses wait for `commits.durable()` (see commits.ts). */
  readonly commits: Commits;
  close(): void;
}

const migrationsFolder = resolve(import.meta.dirname, '../../drizzle');

/**
 * Opens (creating if needed) the SQLite file and applies the drizzle-kit migrations in `drizzle/`.
 * WAL lets readers run beside the writer; `synchronous=FULL` because a lost token write after an
 * acknowledged response would let a consumed code or refresh token be replayed after a crash (the
 * group commit keeps that promise with its own fsync of the WAL, off the event loop: commits.ts).
 *
 * One connection per process: a group-commit batch holds the write lock for a millisecond, across
 * turns of the event loop. A second connection in the same process that writes meanwhile waits for it
 * in SQLite's busy handler, which blocks the very thread that would commit the batch: a deadlock until
 * `busy_timeout`, again for every write. Other processes (the CLI, a second Gatehouse) only wait.
 */
export function openDatabase(path: string): Storage {
  if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
  const sqlite = new Database(path);
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = FULL');
  sqlite.pragma('busy_timeout = 5000');
  sqlite.pragma('foreign_keys = ON');
  // A deleted or overwritten row would otherwise linger in free page space: disconnecting an upstream
  // account must shred its sealed grant (data key included), and a replaced grant must not survive either.
  sqlite.pragma('secure_delete = ON');
  const db = drizzle(sqlite, { schema });
  migrate(db, { migrationsFolder });
  const commits = createCommits(sqlite);
  return {
    db,
    sqlite,
    commits,
    close: () => {
      // A batch still open at shutdown is committed and synced, not lost (its timer then finds nothing to do).
      commits.close();
      sqlite.close();
    },
  };
}
