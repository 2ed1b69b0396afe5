import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { connectWithLogin } from '../test/support/mcp-client.ts';
import {
  bareRoute,
  callWhoami,
  refreshGrant,
  registerClient,
  registration,
  type Scenario,
  STUB_TOKEN,
  sessionHeaders,
  unauthenticatedCall,
} from './scenarios.ts';
import { type RunningTarget, startTarget } from './target-client.ts';

export interface Bench {
  name: string;
  target: RunningTarget;
  /** The scenario for one run expected to send about `requests` requests (refresh tokens are single-use). */
  scenario(requests: number): Promise<Scenario>;
}

export type BenchId =
  | 'ceiling'
  | 'unauthorized'
  | 'gated'
  | 'stubLookup'
  | 'ungated'
  | 'stateless'
  | 'refreshSqlite'
  | 'refreshMemory'
  | 'register';

/** An MCP session opened by the real SDK client (initialize + initialized), whose headers the load joins. */
async function openSession(url: string, headers: Record<string, string> = {}) {
  const transport = new StreamableHTTPClientTransport(new URL('/mcp', url), { requestInit: { headers } });
  const client = new Client({ name: 'gatehouse-bench', version: '1.0.0' });
  await client.connect(transport);
  return { client, headers: { ...sessionHeaders(transport), ...headers } };
}

const fixed = (scenario: Scenario) => async () => scenario;

/**
 * Starts every target, signs in through the demo login with the real SDK client (DCR, consent, code
 * with PKCE, token), opens one MCP session per stateful target, and returns the benches in table order.
 */
export async function setUp(env: Record<string, string>): Promise<{ benches: Record<BenchId, Bench>; close(): Promise<void> }> {
  const targets: RunningTarget[] = [];
  const clients: Client[] = [];
  const start = async (...args: Parameters<typeof startTarget>) => {
    const target = await startTarget(...args);
    targets.push(target);
    return target;
  };
  const close = async () => {
    for (const client of clients) await client.close().catch(() => {});
    for (const target of targets) await target.close().catch(() => {});
  };
  try {
    const ceiling = await start('ceiling', env);
    const gatehouse = await start('gatehouse', env);
    // PUBLIC_URL (localhost:<port>) is the issuer and the resource the SDK client checks.
    const login = await connectWithLogin(env.PUBLIC_URL as string);
    clients.push(login.client);
    const whoami = await login.client.callTool({ name: 'whoami', arguments: {} });
    const accountId = (whoami.structuredContent as { account: string }).account;
    const { access_token: accessToken, refresh_token: refreshToken } = login.oauth.savedTokens ?? {};
    const clientId = login.oauth.clientInfo?.client_id;
    if (!accessToken || !refreshToken || !clientId) throw new Error('the demo login flow did not yield tokens');
    const template = await gatehouse.describe(refreshToken);

    const stubLookup = await start('stub-lookup-mcp', env, accountId);
    const stubSession = await openSession(stubLookup.url, { authorization: `Bearer ${STUB_TOKEN}` });
    const ungated = await start('ungated-mcp', env, accountId);
    const ungatedSession = await openSession(ungated.url);
    clients.push(stubSession.client, ungatedSession.client);
    const stateless = await start('stateless-mcp', env, accountId);
    const memory = await start('oauth-memory', env);
    const memoryClientId = await registerClient(memory.url);
    const unlimited = await start('oauth-sqlite', env);

    const benches: Record<BenchId, Bench> = {
      ceiling: { name: '1. ceiling: bare Fastify GET /', target: ceiling, scenario: fixed(bareRoute()) },
      unauthorized: { name: '2. 401: POST /mcp, no token', target: gatehouse, scenario: fixed(unauthenticatedCall()) },
      gated: {
        name: '3. tools/call whoami, gated (Gatehouse)',
        target: gatehouse,
        scenario: fixed(callWhoami({ ...sessionHeaders(login.transport), authorization: `Bearer ${accessToken}` })),
      },
      stubLookup: { name: '3b. tools/call, gate with stub lookup', target: stubLookup, scenario: fixed(callWhoami(stubSession.headers)) },
      ungated: { name: '4. tools/call whoami, no gate', target: ungated, scenario: fixed(callWhoami(ungatedSession.headers)) },
      stateless: {
        name: '5. tools/call whoami, SDK stateless',
        target: stateless,
        scenario: fixed(callWhoami({ 'mcp-protocol-version': login.transport.protocolVersion ?? '2025-06-18' })),
      },
      refreshSqlite: {
        name: '6a. /token refresh, SQLite (Gatehouse)',
        target: gatehouse,
        scenario: async (requests) => refreshGrant(await gatehouse.mint(template, clientId, requests), clientId),
      },
      refreshMemory: {
        name: '6b. /token refresh, in-memory adapter',
        target: memory,
        scenario: async (requests) => refreshGrant(await memory.mint(template, memoryClientId, requests), memoryClientId),
      },
      register: { name: '7. /register, SQLite, limiter lifted', target: unlimited, scenario: fixed(registration()) },
    };
    return { benches, close };
  } catch (error) {
    await close();
    throw error;
  }
}
