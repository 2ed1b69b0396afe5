import type Database from 'better-sqlite3';

/**
 * Group commit with acknowledgement deferred to the response. Writes run at once, inside one batch
 * transaction that commits a millisecond later; a response that depends on them is held until
 * `durable()` resolves. Every write of a token request (consume, new refresh token, new
 * access token) and of every concurrent request then shares one fsync under `synchronous=FULL`,
 * and nothing is acknowledged before it is on disk.
 */
export interface Commits {
  /**
   * Runs `write` now, inside the batch transaction. It must be one statement (or throw before its
   * statement runs): SQLite undoes a failed statement by itself, without touching the rest of the batch.
   */
  write<T>(write: () => T): T;
  /** Resolves once every write made so far is committed; rejects if that commit failed. */
  durable(): Promise<void>;
  /** Whether any write is waiting for its commit (lets hot paths skip waiting on nothing). */
  pending(): boolean;
  /** Commits the open batch now (before the connection closes). */
  flush(): void;
}

/** How long a batch stays open for more writes; it is also the most a token response waits for it. */
const BATCH_WINDOW_MS = 1;

export function createCommits(sqlite: Database.Database): Commits {
  let batch: { done: Promise<void>; settle(error?: unknown): void } | undefined;

  const flush = (): void => {
    const current = batch;
    if (!current) return;
    batch = undefined;
    try {
      sqlite.exec('COMMIT');
      current.settle();
    } catch (error) {
      if (sqlite.inTransaction) sqlite.exec('ROLLBACK');
      current.settle(error);
    }
  };

  const open = (): void => {
    let settle: (error?: unknown) => void = () => {};
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error === undefined ? resolve() : reject(error));
    });
    // A held response observes the failure; nobody else must see an unhandled rejection.
    done.catch(() => {});
    sqlite.exec('BEGIN IMMEDIATE');
    batch = { done, settle };
    // A short window lets the writes of concurrent requests (each makes several, one await apart) share one fsync.
    setTimeout(flush, BATCH_WINDOW_MS);
  };

  return {
    write(write) {
      // Inside someone else's transaction (a drizzle transaction callback) it simply becomes part of it.
      if (!batch && !sqlite.inTransaction) open();
      return write();
    },
    durable: () => batch?.done ?? Promise.resolve(),
    pending: () => batch !== undefined,
    flush,
  };
}
