/**
 * The parent side of every benchmark child process (a target or a fake upstream): it answers
 * requests over IPC, reports its CPU time, records a CPU profile of one run, and exits with its parent.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';

/** What the parent may ask of any child. */
export type ChildRequest =
  | { type: 'cpu' }
  | { type: 'profile'; action: 'start' }
  | { type: 'profile'; action: 'stop'; file: string }
  | { type: 'close' };

let inspector: Session | undefined;

/** CPU profile of exactly one measured run (`BENCH_CPU_PROF`), written as `<dir>/<file>.cpuprofile`. */
async function profile(request: Extract<ChildRequest, { type: 'profile' }>): Promise<null> {
  if (request.action === 'start') {
    inspector = new Session();
    inspector.connect();
    await inspector.post('Profiler.enable');
    await inspector.post('Profiler.start');
    return null;
  }
  if (!inspector) throw new Error('no profile was started');
  const { profile: result } = await inspector.post('Profiler.stop');
  inspector.disconnect();
  inspector = undefined;
  writeFileSync(join(process.env.BENCH_CPU_PROF ?? '.', `${request.file}.cpuprofile`), JSON.stringify(result));
  return null;
}

/**
 * Answers the parent: `answer` takes the child's own requests, this the common ones. Announces
 * `url` (and `details`, e.g. a fake's issuer) once, when the child is ready.
 */
export function serveParent<Own extends { type: string }>(
  url: string,
  details: Record<string, string>,
  close: () => Promise<void>,
  answer: (request: Own) => Promise<unknown>,
): void {
  const common = async (request: ChildRequest | Own): Promise<unknown> => {
    switch (request.type) {
      case 'cpu': {
        const { user, system } = process.cpuUsage();
        // The main thread's busy time apart: CPU time also counts worker threads (the fsync, the checkpointer).
        const loop = performance.eventLoopUtilization();
        return {
          cpuMicros: user + system,
          atMicros: Number(process.hrtime.bigint() / 1000n),
          loopActiveMs: loop.active,
          loopIdleMs: loop.idle,
        };
      }
      case 'profile':
        return profile(request as Extract<ChildRequest, { type: 'profile' }>);
      case 'close':
        await close();
        setImmediate(() => process.exit(0));
        return null;
      default:
        return answer(request as Own);
    }
  };
  process.on('message', (message: { id: number; request: ChildRequest | Own }) => {
    common(message.request).then(
      (result) => process.send?.({ id: message.id, result }),
      (error: unknown) =>
        process.send?.({ id: message.id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
    );
  });
  // The parent owns this process: if it goes away, so does the child.
  process.on('disconnect', () => process.exit(0));
  process.send?.({ ready: url, details });
}
