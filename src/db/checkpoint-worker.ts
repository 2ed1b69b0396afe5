/**
 * The checkpointer's thread (see `checkpointer.ts`): its own connection to the database, which copies
 * WAL pages into the database file every `intervalMs`, off the event loop that serves requests.
 */
import { parentPort, workerData } from 'node:worker_threads';
import Database from 'better-sqlite3';

const { path, intervalMs } = workerData as { path: string; intervalMs: number };
const db = new Database(path, { fileMustExist: true });
// Never wait: a busy checkpoint lock means another connection is checkpointing right now.
db.pragma('busy_timeout = 0');

const timer = setInterval(() => {
  try {
    // PASSIVE: copies what no reader still needs and never waits for readers or writers; SQLite syncs
    // the WAL before and the database file after, so an interrupted checkpoint loses nothing.
    const [result] = db.pragma('wal_checkpoint(PASSIVE)') as { busy: number; log: number; checkpointed: number }[];
    if (result && result.log > 0) parentPort?.postMessage({ checkpointed: result.checkpointed, log: result.log });
  } catch (error) {
    if ((error as { code?: string }).code !== 'SQLITE_BUSY') throw error;
  }
}, intervalMs);

parentPort?.on('message', (message) => {
  if (message !== 'close') return;
  clearInterval(timer);
  db.close();
  parentPort?.close();
});
