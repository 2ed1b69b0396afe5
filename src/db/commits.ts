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
  /**
   * Like `write`, for records a crash may lose the latest of (rate-limit state, audit rows): runs now,
   * in the open batch or a new one, but a batch holding only such records commits without an fsync
   * (WAL `synchronous=NORMAL` for that commit), so they do not pay one each on the event loop; the
   * next durable commit's fsync covers them. Nothing waits for them; a `write` joining such a batch
   * makes it durable as usual.
   */
  writeEventually<T>(write: () => T): T;
  /** Resolves once every write made so far is committed; rejects if that commit failed. */
  durable(): Promise<void>;
  /** Whether any write is waiting for its commit (lets hot paths skip waiting on nothing). */
  pending(): boolean;
  /** Commits the open batch now (before the connection closes). */
  flush(): void;
}

/** How long a batch stays open for more writes; it is also the most a token response waits for it. */
const BATCH_WINDOW_MS = 1;
/**
 * WAL pages after which a commit also checkpoints them into the database file (SQLite's default is
 * 1000). The checkpoint runs inside that COMMIT, on the event loop, writing each distinct page once
 * and fsyncing both files: a longer WAL holds several versions of the index pages every token write
 * touches, so fewer pages are written per token and the two fsyncs come a quarter as often. The WAL
 * file grows to about 16 MB under load and is reused from its start after each checkpoint, as before.
 */
const CHECKPOINT_AFTER_PAGES = 4000;

export function createCommits(sqlite: Database.Database): Commits {
  // Durability is untouched: each commit still fsyncs the WAL (synchronous=FULL) before it is acknowledged.
  sqlite.pragma(`wal_autocheckpoint = ${CHECKPOINT_AFTER_PAGES}`);
  let batch: { done: Promise<void>; settle(error?: unknown): void; eventual: boolean; timer: NodeJS.Timeout } | undefined;

  const flush = (): void => {
    const current = batch;
    if (!current) return;
    batch = undefined;
    clearTimeout(current.timer);
    try {
      sqlite.exec('COMMIT');
      current.settle();
    } catch (error) {
      if (sqlite.inTransaction) sqlite.exec('ROLLBACK');
      current.settle(error);
    } finally {
      // Outside the transaction again (SQLite refuses the change inside one): back to fsyncing every commit.
      if (current.eventual) sqlite.pragma('synchronous = FULL');
    }
  };

  const open = (eventual: boolean): void => {
    let settle: (error?: unknown) => void = () => {};
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error === undefined ? resolve() : reject(error));
    });
    // A held response observes the failure; nobody else must see an unhandled rejection.
    done.catch(() => {});
    // The lock is held as briefly as ever (a longer window would starve another process's writers);
    // only the fsync is skipped, and only for a batch nothing durable is written in.
    if (eventual) sqlite.pragma('synchronous = NORMAL');
    try {
      sqlite.exec('BEGIN IMMEDIATE');
    } catch (error) {
      // Busy past busy_timeout: no batch opened, and the connection must not stay without fsync.
      if (eventual) sqlite.pragma('synchronous = FULL');
      throw error;
    }
    // A short window lets the writes of concurrent requests (each makes several, one await apart) share one fsync.
    batch = { done, settle, eventual, timer: setTimeout(flush, BATCH_WINDOW_MS) };
  };

  return {
    write(write) {
      // A write someone waits for never joins a batch that will not fsync: that one commits first.
      if (batch?.eventual) flush();
      // Inside someone else's transaction (a drizzle transaction callback) it simply becomes part of it.
      if (!batch && !sqlite.inTransaction) open(false);
      return write();
    },
    writeEventually(write) {
      if (!batch && !sqlite.inTransaction) open(true);
      return write();
    },
    durable: () => batch?.done ?? Promise.resolve(),
    pending: () => batch !== undefined && !batch.eventual,
    flush,
  };
}
