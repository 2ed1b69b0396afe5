/**
 * A benchmark target in its own process, so the server gets one core and autocannon the other.
 * Started by `target-client.ts` with `fork`; answers requests from the parent over IPC.
 */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
import { loadConfig } from '../src/config.ts';
import type { RefreshTokenTemplate } from './refresh-tokens.ts';
import { buildTarget, type TargetKind } from './targets.ts';

export type TargetRequest =
  | { type: 'cpu' }
  | { type: 'describe'; refreshToken: string }
  | { type: 'mint'; template: RefreshTokenTemplate; clientId: string; count: number }
  | { type: 'profile'; action: 'start' }
  | { type: 'profile'; action: 'stop'; file: string }
  | { type: 'close' };

const [kind, json] = process.argv.slice(2) as [TargetKind, string];
const { env, accountId } = JSON.parse(json) as { env: Record<string, string>; accountId: string };
const config = loadConfig(env, () => {});
const target = await buildTarget(kind, config, accountId);
await target.app.listen({ port: target.port, host: '127.0.0.1' });
const address = target.app.server.address();
const port = typeof address === 'object' && address ? address.port : target.port;

const minter = () => {
  if (!target.tokens) throw new Error(`target ${kind} cannot mint refresh tokens`);
  return target.tokens;
};

let inspector: Session | undefined;

/** CPU profile of exactly one measured run (`BENCH_CPU_PROF`), written as `<dir>/<file>.cpuprofile`. */
async function profile(request: Extract<TargetRequest, { type: 'profile' }>): Promise<null> {
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

async function answer(request: TargetRequest): Promise<unknown> {
  switch (request.type) {
    case 'cpu': {
      const { user, system } = process.cpuUsage();
      return { cpuMicros: user + system, atMicros: Number(process.hrtime.bigint() / 1000n) };
    }
    case 'describe':
      return minter().describe(request.refreshToken);
    case 'mint':
      return minter().mint(request.template, request.clientId, request.count);
    case 'profile':
      return profile(request);
    case 'close':
      await target.app.close();
      setImmediate(() => process.exit(0));
      return null;
  }
}

process.on('message', (message: { id: number; request: TargetRequest }) => {
  answer(message.request).then(
    (result) => process.send?.({ id: message.id, result }),
    (error: unknown) => process.send?.({ id: message.id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
  );
});
// The parent owns this process: if it goes away, so does the target.
process.on('disconnect', () => process.exit(0));
process.send?.({ ready: `http://127.0.0.1:${port}` });
