import type Database from 'better-sqlite3';

interface Pending {
  run: () => unknown;
  resolve(value: unknown): void;
  reject(error: unknown): void;
}

export type Committer = <T>(run: () => T) => Promise<T>;

/**
 * Group commit: every write queued in one event-loop turn runs in one transaction, and each caller's
 * promise settles only after that transaction is durably committed. Concurrent token requests then
 * share one fsync (`synchronous=FULL`) instead of paying one each. Each write runs in its own
 * savepoint, so one that throws (a lost consume race) rolls back alone and fails only its caller.
 */
export function createGroupCommit(sqlite: Database.Database): Committer {
  let queue: Pending[] = [];

  const flush = (): void => {
    const batch = queue;
    queue = [];
    const outcomes = batch.map(() => ({ ok: false, value: undefined as unknown, error: undefined as unknown }));
    try {
      sqlite.transaction(() => {
        batch.forEach((pending, index) => {
          const outcome = outcomes[index] as (typeof outcomes)[number];
          try {
            // A transaction function called inside another one runs as a SAVEPOINT (better-sqlite3).
            outcome.value = sqlite.transaction(pending.run)();
            outcome.ok = true;
          } catch (error) {
            outcome.error = error;
          }
        });
      })();
    } catch (error) {
      // The commit itself failed: nothing in the batch is durable.
      for (const outcome of outcomes) Object.assign(outcome, { ok: false, error: outcome.error ?? error });
    }
    batch.forEach((pending, index) => {
      const outcome = outcomes[index] as (typeof outcomes)[number];
      if (outcome.ok) pending.resolve(outcome.value);
      else pending.reject(outcome.error);
    });
  };

  return <T>(run: () => T): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (queue.length === 0) setImmediate(flush);
      queue.push({ run, resolve: resolve as (value: unknown) => void, reject });
    });
}
