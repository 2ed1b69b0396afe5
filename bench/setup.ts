import { connectWithLogin } from '../test/support/mcp-client.ts';
import { createLab, type Lab } from './lab.ts';
import {
  bareRoute,
  callWhoami,
  fixed,
  refreshGrant,
  registerClient,
  registration,
  type Scenario,
  sessionHeaders,
  unauthenticatedCall,
} from './scenarios.ts';
import type { RunningTarget } from './target-client.ts';
import { type UpstreamBenchId, upstreamBenches } from './upstream-benches.ts';

export interface Bench {
  name: string;
  target: RunningTarget;
  /** Fake upstreams the target calls while it serves: their CPU is shown apart, not counted as other work on the machine. */
  helpers?: RunningTarget[];
  /** Keep-alive connections; the run's default otherwise. */
  connections?: number;
  /** Seconds per measured run; the run's default otherwise. */
  seconds?: number;
  /** The scenario for one run expected to send about `requests` requests (refresh tokens are single-use). */
  scenario(requests: number): Promise<Scenario>;
}

type CoreBenchId =
  | 'unauthorized'
  | 'gated'
  | 'ungated'
  | 'minimal'
  | 'bare'
  | 'stateless'
  | 'refreshSqlite'
  | 'refreshMemory'
  | 'refreshSqlite10'
  | 'register';
export type BenchId = 'ceiling' | CoreBenchId | UpstreamBenchId;

export interface SetUpOptions {
  /** Whether any of these bench labels (`3b`, `8a`) is to run: groups nobody wants are not started. */
  wants(labels: readonly string[]): boolean;
  /** Seconds per measured run of benches 8 and 9 (nine runs a round, so shorter than the others). */
  callSeconds: number;
}

/**
 * Starts the targets of the wanted benches (the ceiling always: every table row is a ratio to it)
 * and returns the benches in table order.
 */
export async function setUp(options: SetUpOptions): Promise<{ benches: Partial<Record<BenchId, Bench>>; close(): Promise<void> }> {
  const lab = createLab();
  try {
    const env = await lab.env();
    const benches: Partial<Record<BenchId, Bench>> = {
      ceiling: { name: '1. ceiling: bare Fastify GET /', target: await lab.start('ceiling', env), scenario: fixed(bareRoute()) },
    };
    if (options.wants(['2', '3', '4', '4b', '4c', '5', '6a', '6b', '6c', '7'])) Object.assign(benches, await coreBenches(lab, env));
    const tool = options.wants(['8a', '8b', '8c', '8d', '8e', '8f']);
    const proxy = options.wants(['9a', '9b', '9c']);
    if (tool || proxy) Object.assign(benches, await upstreamBenches(lab, { tool, proxy, seconds: options.callSeconds }));
    return { benches, close: lab.close };
  } catch (error) {
    await lab.close();
    throw error;
  }
}

/**
 * Connections for the refresh benches 6a and 6b, which compare two adapters' throughput, so both must
 * run with the target's event loop saturated. A refresh on Gatehouse is answered only once its writes
 * are fsynced (1.5–2 ms on this machine's disk), so at 10 connections 6a's loop idles 10–15% of the
 * time waiting for the disk and its rate measures that latency rather than what the adapter costs
 * (6c shows it); 6b, with no fsync, is saturated either way. The `loop busy` column shows that each is.
 */
const REFRESH_CONNECTIONS = 32;

/**
 * Benches 2–7: signs in through the demo login with the real SDK client (DCR, consent, code with
 * PKCE, token) and opens one MCP session per stateful target.
 */
async function coreBenches(lab: Lab, env: Record<string, string>): Promise<Record<CoreBenchId, Bench>> {
  const gatehouse = await lab.start('gatehouse', env);
  // PUBLIC_URL (localhost:<port>) is the issuer and the resource the SDK client checks.
  const login = await connectWithLogin(env.PUBLIC_URL as string);
  lab.keep(login.client);
  const whoami = await login.client.callTool({ name: 'whoami', arguments: {} });
  const accountId = (whoami.structuredContent as { account: string }).account;
  const { access_token: accessToken, refresh_token: refreshToken } = login.oauth.savedTokens ?? {};
  const clientId = login.oauth.clientInfo?.client_id;
  if (!accessToken || !refreshToken || !clientId) throw new Error('the demo login flow did not yield tokens');
  const template = await gatehouse.describe(refreshToken);

  const ungated = await lab.start('ungated-gatehouse', env, accountId);
  const ungatedSession = await lab.openSession(new URL('/mcp', ungated.url));
  const minimal = await lab.start('ungated-mcp', env, accountId);
  const minimalSession = await lab.openSession(new URL('/mcp', minimal.url));
  const bare = await lab.start('bare-mcp', env, accountId);
  const bareSession = await lab.openSession(new URL('/mcp', bare.url));
  const stateless = await lab.start('stateless-mcp', env, accountId);
  const memory = await lab.start('oauth-memory', env);
  const memoryClientId = await registerClient(memory.url);
  const unlimited = await lab.start('oauth-sqlite', env);
  const refreshOnGatehouse = async (requests: number) => refreshGrant(await gatehouse.mint(template, clientId, requests), clientId);

  return {
    unauthorized: { name: '2. 401: POST /mcp, no token', target: gatehouse, scenario: fixed(unauthenticatedCall()) },
    gated: {
      name: '3. tools/call whoami, gated (Gatehouse)',
      target: gatehouse,
      scenario: fixed(callWhoami({ ...sessionHeaders(login.transport), authorization: `Bearer ${accessToken}` })),
    },
    ungated: {
      name: '4. tools/call whoami, gate skipped',
      target: ungated,
      // The same request bytes as 3 (the skipped gate never reads the header): 3/4 is the gate's work alone.
      scenario: fixed(callWhoami({ ...ungatedSession, authorization: `Bearer ${accessToken}` })),
    },
    minimal: { name: '4b. … minimal app, no gate', target: minimal, scenario: fixed(callWhoami(minimalSession)) },
    bare: { name: '4c. … minimal, no gate/limits/audit', target: bare, scenario: fixed(callWhoami(bareSession)) },
    stateless: {
      name: '5. tools/call whoami, SDK stateless',
      target: stateless,
      scenario: fixed(callWhoami({ 'mcp-protocol-version': login.transport.protocolVersion ?? '2025-06-18' })),
    },
    refreshSqlite: {
      name: `6a. /token refresh, SQLite (Gatehouse), ${REFRESH_CONNECTIONS} conn`,
      target: gatehouse,
      connections: REFRESH_CONNECTIONS,
      scenario: refreshOnGatehouse,
    },
    refreshMemory: {
      name: `6b. /token refresh, in-memory adapter, ${REFRESH_CONNECTIONS} conn`,
      target: memory,
      connections: REFRESH_CONNECTIONS,
      scenario: async (requests) => refreshGrant(await memory.mint(template, memoryClientId, requests), memoryClientId),
    },
    refreshSqlite10: { name: '6c. … 6a at 10 connections', target: gatehouse, scenario: refreshOnGatehouse },
    register: { name: '7. /register, SQLite, limiter lifted', target: unlimited, scenario: fixed(registration()) },
  };
}
