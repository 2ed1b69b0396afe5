import { connectThroughUpstream, GOOGLE_CLIENT, ScopedOAuthClient } from '../test/support/federation.ts';
import { TestOAuthClient } from '../test/support/mcp-client.ts';
import { BENCH_CALENDARS } from './bench-user.ts';
import type { Lab } from './lab.ts';
import { callTool, fixed, listCalendarsDirect, sessionHeaders } from './scenarios.ts';
import type { Bench } from './setup.ts';
import type { RunningTarget } from './target-client.ts';

export type UpstreamBenchId =
  | 'calendarDirect1'
  | 'calendarTool1'
  | 'calendarDirect10'
  | 'calendarTool10'
  | 'calendarHop1'
  | 'calendarHop10'
  | 'backendDirect'
  | 'backendProxy'
  | 'backendHop';

const LIST_CALENDARS = { name: 'google_calendar_list_calendars', arguments: {} };
/** The backend's tool answers with the bearer its request carried: every answer shows whose token arrived. */
const ECHO_BEARER = { name: 'echo_bearer', arguments: {} };
const PRIMARY = String(BENCH_CALENDARS[0]?.summary);

/**
 * Benches 8 (an upstream tool: Gatehouse against the fake Calendar API it calls) and 9 (proxy mode:
 * Gatehouse against the backend MCP server it forwards to). Each fake runs in its own process; the
 * user signs in through the fake Google with the real SDK client, as in the flow tests.
 */
export async function upstreamBenches(
  lab: Lab,
  options: { tool: boolean; proxy: boolean; seconds: number },
): Promise<Partial<Record<UpstreamBenchId, Bench>>> {
  const google = await lab.start('fake-google', {});
  const googleEnv = {
    GOOGLE_CLIENT_ID: GOOGLE_CLIENT.id,
    GOOGLE_CLIENT_SECRET: GOOGLE_CLIENT.secret,
    GOOGLE_ISSUER: String(google.details.issuer),
    GOOGLE_API_URL: google.url,
  };
  return {
    ...(options.tool ? await calendarBenches(lab, google, googleEnv, options.seconds) : {}),
    ...(options.proxy ? await proxyBenches(lab, googleEnv, options.seconds) : {}),
  };
}

/** Signs in at Gatehouse through the fake Google and opens an MCP session; returns the headers the load sends. */
async function signIn(lab: Lab, origin: string, oauth: TestOAuthClient) {
  const { client, transport } = await connectThroughUpstream(origin, 'google', { oauth });
  lab.keep(client);
  const token = oauth.savedTokens?.access_token;
  if (!token) throw new Error('signing in through the fake Google yielded no Gatehouse token');
  return { client, headers: { ...sessionHeaders(transport), authorization: `Bearer ${token}` } };
}

/**
 * 8a–8d: `google_calendar_list_calendars` through Gatehouse against the Calendar API request it makes,
 * sent straight to the same fake with the same upstream token (what a client holding that token would
 * do). Both pay the fake's userinfo hop, so the baseline is the same upstream work; the difference is
 * Gatehouse: gate, rate-limit check, MCP session, tool context, vault read, outbound fetch, schemas.
 */
async function calendarBenches(
  lab: Lab,
  google: RunningTarget,
  googleEnv: Record<string, string>,
  seconds: number,
): Promise<Partial<Record<UpstreamBenchId, Bench>>> {
  const env = await lab.env(googleEnv);
  const gatehouse = await lab.start('gatehouse', env);
  const before = new Set(await google.issuedTokens());
  const { headers } = await signIn(lab, String(env.PUBLIC_URL), new ScopedOAuthClient('mcp google.calendar'));
  // The upstream access token Gatehouse holds is the one of this sign-in the Calendar API accepts (not its refresh token).
  const issued = (await google.issuedTokens()).filter((token) => !before.has(token));
  const upstreamToken = await firstAccepted(google.url, issued);
  const tool = fixed(callTool(headers, LIST_CALENDARS, `${PRIMARY} (primary)`));
  const direct = fixed(listCalendarsDirect(upstreamToken, PRIMARY));
  const hop = await lab.start('forwarder', { FORWARD_TO: google.url });
  return {
    calendarDirect1: { name: '8a. Calendar API GET, direct, 1 conn', target: google, connections: 1, seconds, scenario: direct },
    calendarTool1: {
      name: '8b. tools/call list_calendars, 1 conn',
      target: gatehouse,
      helpers: [google],
      connections: 1,
      seconds,
      scenario: tool,
    },
    calendarDirect10: { name: '8c. Calendar API GET, direct, 10 conn', target: google, connections: 10, seconds, scenario: direct },
    calendarTool10: {
      name: '8d. tools/call list_calendars, 10 conn',
      target: gatehouse,
      helpers: [google],
      connections: 10,
      seconds,
      scenario: tool,
    },
    calendarHop1: {
      name: '8e. 8a via a bare forwarder, 1 conn',
      target: hop,
      helpers: [google],
      connections: 1,
      seconds,
      scenario: direct,
    },
    calendarHop10: {
      name: '8f. 8c via a bare forwarder, 10 conn',
      target: hop,
      helpers: [google],
      connections: 10,
      seconds,
      scenario: direct,
    },
  };
}

async function firstAccepted(apiUrl: string, tokens: readonly string[]): Promise<string> {
  for (const token of tokens) {
    const response = await fetch(new URL('/calendar/v3/users/me/calendarList', apiUrl), { headers: { authorization: `Bearer ${token}` } });
    await response.arrayBuffer();
    if (response.ok) return token;
  }
  throw new Error('the fake Calendar API accepted none of the tokens the sign-in issued');
}

/**
 * 9a/9b: `tools/call` of the backend's tool through Gatehouse in proxy mode against the same call on
 * the backend's own session with the same upstream token. Gatehouse adds: gate, rate-limit check,
 * session binding, vault read, and a second HTTP hop both ways (streamed, not buffered).
 */
async function proxyBenches(
  lab: Lab,
  googleEnv: Record<string, string>,
  seconds: number,
): Promise<Partial<Record<UpstreamBenchId, Bench>>> {
  const backend = await lab.start('fake-backend', {});
  const mcpUrl = new URL(backend.details.mcpPath ?? '/mcp', backend.url);
  const env = await lab.env({ ...googleEnv, MCP_BACKEND_URL: mcpUrl.href, MCP_BACKEND_PROVIDER: 'google' });
  const gatehouse = await lab.start('gatehouse', env);
  const { client, headers } = await signIn(lab, String(env.PUBLIC_URL), new TestOAuthClient());
  const echoed = (await client.callTool(ECHO_BEARER)) as { content?: { text?: string }[] };
  const upstreamToken = echoed.content?.[0]?.text;
  if (!upstreamToken) throw new Error('the backend did not echo the bearer Gatehouse sent it');
  const direct = await lab.openSession(mcpUrl, { authorization: `Bearer ${upstreamToken}` });
  const hop = await lab.start('forwarder', { FORWARD_TO: backend.url });
  return {
    backendDirect: {
      name: '9a. backend tools/call, direct',
      target: backend,
      seconds,
      scenario: fixed(callTool(direct, ECHO_BEARER, upstreamToken, mcpUrl.pathname)),
    },
    backendProxy: {
      name: '9b. backend tools/call, Gatehouse proxy',
      target: gatehouse,
      helpers: [backend],
      seconds,
      scenario: fixed(callTool(headers, ECHO_BEARER, upstreamToken)),
    },
    backendHop: {
      name: '9c. 9a via a bare forwarder',
      target: hop,
      helpers: [backend],
      seconds,
      scenario: fixed(callTool(direct, ECHO_BEARER, upstreamToken, mcpUrl.pathname)),
    },
  };
}
