/**
 * A benchmark target in its own process, so the server gets one core and autocannon the other.
 * Started by `target-client.ts` with `fork`; answers requests from the parent over IPC.
 */
import { loadConfig } from '../src/config.ts';
import { type ChildRequest, serveParent } from './child-ipc.ts';
import type { RefreshTokenTemplate } from './refresh-tokens.ts';
import { buildTarget, type TargetKind } from './targets.ts';

type OwnRequest =
  | { type: 'describe'; refreshToken: string }
  | { type: 'mint'; template: RefreshTokenTemplate; clientId: string; count: number };
export type TargetRequest = ChildRequest | OwnRequest;

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

serveParent<OwnRequest>(
  `http://127.0.0.1:${port}`,
  {},
  async () => {
    const closing = target.app.close();
    // The run is over: an idle connection an SDK client's fetch opened and never used would hold close() until headersTimeout (60 s).
    target.app.server.closeAllConnections();
    await closing;
  },
  async (request) =>
    request.type === 'describe'
      ? minter().describe(request.refreshToken)
      : minter().mint(request.template, request.clientId, request.count),
);
