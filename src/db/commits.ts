import { closeSync, fdatasync, fdatasyncSync, fstatSync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import type Database from 'better-sqlite3';

/**
 * Group commit with acknowledgement deferred to the response. Writes run at once, inside one batch
 * transaction that commits a millisecond later; a response that depends on them is held until
 * `durable()` resolves, which is once the WAL holding them is on disk. Every write of a token request
 * (consume, new refresh token, new access token) and of every concurrent request then shares one
 * fsync, and nothing is acknowledged before it is on disk.
 *
 * The fsync runs off the event loop. SQLite's `synchronous=FULL` would fsync the WAL inside COMMIT,
 * blocking every other request for that long (a COMMIT took 220–290 µs with it, 50–70 µs without). A
 * batch instead commits with `synchronous=NORMAL` (SQLite writes the WAL frames but does not sync
 * them) and Gatehouse then fdatasyncs the WAL file on libuv's thread pool, as SQLite itself would
 * have, before `durable()` resolves. What a crash can lose is unchanged: only commits no response has
 * acknowledged. Other connections may read a commit before its fsync ends, as a reader under FULL
 * may; anything they write on top of it is committed after it, to the same WAL, and synced with it.
 * A checkpoint (`checkpointer.ts`) syncs the WAL before copying it and the database file before the
 * WAL may restart, so frames still waiting for this sync are on disk either way.
 */
export interface Commits {
  /**
   * Runs `write` now, inside the batch transaction. It must be one statement (or throw before its
   * statement runs): SQLite undoes a failed statement by itself, without touching the rest of the batch.
   */
  write<T>(write: () => T): T;
  /**
   * Like `write`, for records a crash may lose the latest of (rate-limit state, audit rows): runs now,
   * in the open batch or a new one, but a batch holding only such records is not fsynced, so they do
   * not pay one each; the next durable commit's fsync covers them. Nothing waits for them; a `write`
   * joining such a batch makes it durable as usual.
   */
  writeEventually<T>(write: () => T): T;
  /**
   * Resolves once every write made so far is committed, and every durable one on disk; rejects if that
   * commit or fsync failed.
   */
  durable(): Promise<void>;
  /** Whether any write is waiting for its commit or its fsync (lets hot paths skip waiting on nothing). */
  pending(): boolean;
  /** Commits the open batch now. */
  flush(): void;
  /** Commits the open batch and syncs the WAL before the connection closes; later writes are not synced. */
  close(): void;
}

/** Syncs a file's data to disk, off the event loop (fdatasync, as SQLite does on Linux). */
export type SyncFile = (fd: number) => Promise<void>;

const syncOffLoop: SyncFile = (fd) => new Promise((resolve, reject) => fdatasync(fd, (error) => (error ? reject(error) : resolve())));

/**
 * The switch around each batch's COMMIT, run with exec(): pragma() prepares a statement object each
 * time, and the two cost 13 µs a batch that way against 1.6 µs.
 */
const SYNC_IN_COMMIT = 'PRAGMA synchronous = FULL';
const NO_SYNC_IN_COMMIT = 'PRAGMA synchronous = NORMAL';

/** How long a batch stays open for more writes; it is also the most a token response waits for it. */
const BATCH_WINDOW_MS = 1;

export function createCommits(sqlite: Database.Database, syncFile: SyncFile = syncOffLoop): Commits {
  // Without a WAL (an in-memory database) SQLite's own commit is all the durability there is.
  const inWal = !sqlite.memory && sqlite.pragma('journal_mode', { simple: true }) === 'wal';
  const wal = inWal ? walSync(`${resolve(sqlite.name)}-wal`, syncFile) : undefined;
  let batch: { done: Promise<void>; settle(error?: unknown): void; eventual: boolean; timer: NodeJS.Timeout } | undefined;
  /** The last durable batch, until it is on disk: every earlier one is on disk when it is. */
  let unsynced: Promise<void> | undefined;

  const flush = (): void => {
    const current = batch;
    if (!current) return;
    batch = undefined;
    clearTimeout(current.timer);
    try {
      sqlite.exec('COMMIT');
    } catch (error) {
      if (sqlite.inTransaction) sqlite.exec('ROLLBACK');
      current.settle(error);
      return;
    } finally {
      // Outside the transaction again (SQLite refuses the change inside one): writes made outside a
      // batch (drizzle transactions, the CLI) keep SQLite's own fsync in every COMMIT.
      if (wal || current.eventual) sqlite.exec(SYNC_IN_COMMIT);
    }
    if (current.eventual || !wal) current.settle();
    else
      wal.synced().then(
        () => current.settle(),
        (error: unknown) => current.settle(error),
      );
  };

  const open = (eventual: boolean): void => {
    const { promise: done, resolve, reject } = Promise.withResolvers<void>();
    const settle = (error?: unknown) => (error === undefined ? resolve() : reject(error));
    // A held response observes the failure; nobody else must see an unhandled rejection.
    done.catch(() => {});
    // The COMMIT writes the WAL without syncing it; a durable batch is synced right after, off the event loop.
    if (wal || eventual) sqlite.exec(NO_SYNC_IN_COMMIT);
    try {
      sqlite.exec('BEGIN IMMEDIATE');
    } catch (error) {
      // Busy past busy_timeout: no batch opened, and the connection must not stay without fsync.
      sqlite.exec(SYNC_IN_COMMIT);
      throw error;
    }
    // A short window lets the writes of concurrent requests (each makes several, one await apart) share one fsync.
    batch = { done, settle, eventual, timer: setTimeout(flush, BATCH_WINDOW_MS) };
    if (!eventual) track(done);
  };

  const track = (done: Promise<void>): void => {
    unsynced = done;
    const clear = () => {
      if (unsynced === done) unsynced = undefined;
    };
    done.then(clear, clear);
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
    durable() {
      // An open batch of eventual writes commits without a sync; a durable one before it may still be syncing.
      if (batch?.eventual && unsynced) return Promise.all([batch.done, unsynced]).then(() => undefined);
      return batch?.done ?? unsynced ?? Promise.resolve();
    },
    pending: () => unsynced !== undefined,
    flush,
    close() {
      flush();
      wal?.close();
    },
  };
}

/**
 * Group fsync of the WAL file: a commit made while a sync is running waits for the next one (the
 * running one may have started before its frames were written), and that next one covers every
 * commit that arrived meanwhile.
 */
function walSync(path: string, syncFile: SyncFile): { synced(): Promise<void>; close(): void } {
  let fd: number | undefined;
  let running: Promise<void> | undefined;
  let next: PromiseWithResolvers<void> | undefined;
  let closed = false;

  /**
   * The WAL exists from the first commit on and lasts as long as this connection is open (SQLite
   * deletes it only when the last connection closes), so one descriptor serves every sync. fdatasync
   * through any descriptor of a file writes out that file's data.
   */
  const walFd = (): number => {
    if (fd === undefined || fstatSync(fd).nlink === 0) {
      if (fd !== undefined) closeSync(fd);
      fd = openSync(path, 'r');
    }
    return fd;
  };

  const start = (): Promise<void> => {
    const sync = syncFile(walFd());
    running = sync.finally(() => {
      running = undefined;
      const waiting = next;
      next = undefined;
      if (!waiting) return;
      if (closed) {
        waiting.resolve(); // close() synced them already
        return;
      }
      try {
        start().then(waiting.resolve, waiting.reject);
      } catch (error) {
        waiting.reject(error);
      }
    });
    running.catch(() => {});
    return sync;
  };

  return {
    synced() {
      if (closed) return Promise.resolve();
      try {
        if (!running) return start();
      } catch (error) {
        return Promise.reject(error);
      }
      next ??= Promise.withResolvers<void>();
      return next.promise;
    },
    close() {
      if (closed) return;
      closed = true;
      if (fd === undefined) return;
      const last = fd;
      fdatasyncSync(last);
      // A sync still running on the thread pool holds the descriptor: close it once that one ends.
      if (running) running.finally(() => closeSync(last)).catch(() => {});
      else closeSync(last);
    },
  };
}
