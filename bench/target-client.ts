import { type ChildProcess, fork } from 'node:child_process';
import type { FakeKind, FakeRequest } from './fake-process.ts';
import type { RefreshTokenTemplate } from './refresh-tokens.ts';
import type { TargetRequest } from './target-process.ts';
import type { TargetKind } from './targets.ts';

export interface RunningTarget {
  url: string;
  /** What a fake announced besides its URL (the fake IdP's issuer, the backend's MCP path). */
  details: Record<string, string>;
  /** CPU time the target process has used and when, to tell a saturated server from a saturated load generator. */
  /** CPU time of the whole process, and the main thread's busy and idle time (event-loop utilization). */
  cpu(): Promise<{ cpuMicros: number; atMicros: number; loopActiveMs: number; loopIdleMs: number }>;
  describe(refreshToken: string): Promise<RefreshTokenTemplate>;
  mint(template: RefreshTokenTemplate, clientId: string, count: number): Promise<string[]>;
  /** Every token the fake IdP issued (`fake-google` only). */
  issuedTokens(): Promise<string[]>;
  /** Starts, or stops and saves, a CPU profile of the target (only with `BENCH_CPU_PROF`). */
  profile(action: 'start' | 'stop', file?: string): Promise<void>;
  close(): Promise<void>;
}

const isFake = (kind: TargetKind | FakeKind): kind is FakeKind => kind.startsWith('fake-') || kind === 'forwarder';

/** Forks `target-process.ts` (or `fake-process.ts` for a fake upstream) for one target and waits until it listens. */
/** The longest a child may take to answer one request (minting a pool of refresh tokens takes a few seconds). */
const CALL_TIMEOUT_MS = 60_000;

export async function startTarget(kind: TargetKind | FakeKind, env: Record<string, string>, accountId = ''): Promise<RunningTarget> {
  const script = new URL(isFake(kind) ? './fake-process.ts' : './target-process.ts', import.meta.url);
  const child: ChildProcess = fork(script, [kind, JSON.stringify({ env, accountId })], {
    stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
    execArgv: [],
  });
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    // src/oauth/routes.ts parses POST /register itself on purpose (to sanitise it); oidc-provider says so once per process.
    process.stderr.write(text.replace(/^oidc-provider WARNING: already parsed request body detected.*\n/gm, ''));
  });
  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  let nextId = 1;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code) => {
      for (const call of pending.values()) call.reject(new Error(`target ${kind} exited with ${code}`));
      pending.clear();
      resolve();
    }),
  );

  const ready = await new Promise<{ url: string; details: Record<string, string> }>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`target ${kind} exited with ${code} before listening`)));
    child.on('message', (message: { ready?: string; details?: Record<string, string>; id?: number; result?: unknown; error?: string }) => {
      if (message.ready) return resolve({ url: message.ready, details: message.details ?? {} });
      const call = message.id === undefined ? undefined : pending.get(message.id);
      if (!call || message.id === undefined) return;
      pending.delete(message.id);
      if (message.error) call.reject(new Error(`target ${kind}: ${message.error}`));
      else call.resolve(message.result);
    });
  });

  const call = <T>(request: TargetRequest | FakeRequest): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      if (!child.connected) return reject(new Error(`target ${kind} is gone`));
      const id = nextId++;
      // A request the child never answers names itself, rather than leaving the run to its overall time limit.
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`target ${kind} did not answer '${request.type}' within ${CALL_TIMEOUT_MS / 1000} s`));
      }, CALL_TIMEOUT_MS);
      const settle =
        <A extends unknown[]>(then: (...args: A) => void) =>
        (...args: A) => {
          clearTimeout(timer);
          then(...args);
        };
      pending.set(id, { resolve: settle(resolve as (value: unknown) => void), reject: settle(reject) });
      child.send({ id, request });
    });

  return {
    ...ready,
    cpu: () => call({ type: 'cpu' }),
    describe: (refreshToken) => call({ type: 'describe', refreshToken }),
    mint: (template, clientId, count) => call({ type: 'mint', template, clientId, count }),
    issuedTokens: () => call({ type: 'issued-tokens' }),
    profile: (action, file = kind) => call(action === 'start' ? { type: 'profile', action } : { type: 'profile', action, file }),
    close: async () => {
      await call({ type: 'close' });
      await exited;
    },
  };
}
