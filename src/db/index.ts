import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { type BetterSQLite3Database, drizzle } from 'drizzle-orm/better-sqlite3';
import { migrate } from 'drizzle-orm/better-sqlite3/migrator';
import { type CheckpointerOptions, startCheckpointer } from './checkpointer.ts';
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
 * WAL pages after which a COMMIT also checkpoints them into the database file, on the event loop
 * (SQLite's default is 1000). Without the checkpointer thread: a longer WAL holds several versions of
 * the index pages every token write touches, so each checkpoint writes fewer pages per token and its
 * two fsyncs come a quarter as often. With it, only a backstop should the thread fail.
 */
const CHECKPOINT_AFTER_PAGES = 4000;
const BACKSTOP_AFTER_PAGES = 16_000;

export interface OpenOptions {
  /** Checkpoint the WAL from a worker thread rather than inside commits (the server; not the CLI). */
  checkpointer?: CheckpointerOptions;
}

/**
 * Opens (creating if needed) the SQLite file and applies the drizzle-kit migrations in `drizzle/`.
 * WAL lets readers run beside the writer; `synchronous=FULL` because a lost token write after an
 * acknowledged response would let a consumed code or refresh token be replayed after a crash (the
 * group commit keeps that promise with its own fsync of the WAL, off the event loop: commits.ts).
 *
 * One writing connection per process: a group-commit batch holds the write lock for a millisecond,
 * across turns of the event loop. A second connection on the same thread that writes meanwhile waits
 * for it in SQLite's busy handler, which blocks the very thread that would commit the batch: a
 * deadlock until `busy_timeout`, again for every write. Other processes (the CLI, a second Gatehouse)
 * only wait; the checkpointer's connection has a thread of its own and writes no rows.
 */
export function openDatabase(path: string, options: OpenOptions = {}): Storage {
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
  const checkpointer = options.checkpointer && !sqlite.memory ? startCheckpointer(resolve(path), options.checkpointer) : undefined;
  sqlite.pragma(`wal_autocheckpoint = ${checkpointer ? BACKSTOP_AFTER_PAGES : CHECKPOINT_AFTER_PAGES}`);
  return {
    db,
    sqlite,
    commits,
    close: () => {
      checkpointer?.close();
      // A batch still open at shutdown is committed and synced, not lost (its timer then finds nothing to do).
      commits.close();
      sqlite.close();
    },
  };
}
