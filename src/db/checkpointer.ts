import { Worker } from 'node:worker_threads';

/** How often the worker checkpoints: a few hundred WAL pages at a time under load, none when idle. */
const CHECKPOINT_INTERVAL_MS = 100;

export interface Checkpointer {
  /** Stops the thread; it closes its connection first. */
  close(): void;
}

export interface CheckpointerOptions {
  intervalMs?: number;
  /** Told when the thread fails; the serving connection's own autocheckpoint then keeps the WAL bounded. */
  onError?(error: Error): void;
  /** Told of each checkpoint that found WAL pages (tests observe the thread through it). */
  onCheckpoint?(pages: { checkpointed: number; log: number }): void;
}

/**
 * Checkpoints the WAL of the database at `path` from a worker thread with its own connection. SQLite's
 * autocheckpoint runs inside the COMMIT that crosses its threshold, on the event loop: it writes every
 * page the WAL changed into the database file and fsyncs both, stalling every request for
 * milliseconds (with this thread, refresh p99 in the bench fell from 22–28 ms to 10–12 ms). A checkpoint by
 * another connection on another thread takes no lock the serving connection waits for.
 */
export function startCheckpointer(path: string, options: CheckpointerOptions = {}): Checkpointer {
  const worker = new Worker(new URL('./checkpoint-worker.ts', import.meta.url), {
    workerData: { path, intervalMs: options.intervalMs ?? CHECKPOINT_INTERVAL_MS },
  });
  // It never keeps the process alive: at exit the WAL is simply checkpointed at the next start.
  worker.unref();
  worker.on('error', (error) => options.onError?.(error));
  worker.on('message', (message: { checkpointed: number; log: number }) => options.onCheckpoint?.(message));
  return { close: () => worker.postMessage('close') };
}
