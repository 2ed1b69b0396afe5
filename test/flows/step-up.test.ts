import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeGoogleApi, startFakeGoogleApi } from '../support/fake-google-api.ts';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import { connectThroughUpstream, federationEnv, GOOGLE_CLIENT } from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { TestOAuthClient } from '../support/mcp-client.ts';
import { mcpPost } from '../support/oauth.ts';
import { formAction, hiddenField, UserAgent } from '../support/user-agent.ts';

/**
 * An MCP client that keeps every authorization URL the SDK built, optionally registered without
 * refresh tokens. Its first authorization asks for the base scope only, as a client that chooses to
 * start with less than the challenge names (a subset is always allowed): the token it gets needs a step-up.
 */
class WatchedOAuthClient extends TestOAuthClient {
  readonly requested: URL[] = [];
  constructor(options: { refreshTokens: boolean }) {
    super({
      client_name: 'Step-up Client',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: options.refreshTokens ? ['authorization_code', 'refresh_token'] : ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    });
  }
  override redirectToAuthorization(url: URL): void {
    this.requested.push(new URL(url));
    if (this.requested.length === 1) url.searchParams.set('scope', 'mcp');
    super.redirectToAuthorization(url);
  }
}

const calendarsOf = (client: Client) => client.callTool({ name: 'google_calendar_list_calendars', arguments: {} });

let serial = 0;
const person = (label: string) => {
  serial += 1;
  return { email: `${label}-${serial}@example.com`, name: `${label} ${serial}`, sub: String(5n * 10n ** 20n + BigInt(serial)) };
};

describe('scope step-up from the base scope to a tool family (MCP 2025-11-25 authorization)', () => {
  let google: FakeOidc;
  let api: FakeGoogleApi;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    google = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret });
    api = await startFakeGoogleApi({ issuer: google.issuer });
    gatehouse = await startGatehouse({ ...federationEnv({ google }), GOOGLE_API_URL: api.url });
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([api?.close(), google?.close()]);
  });

  /** The 401 challenge names every scope; this client signs in asking for the base scope only. */
  async function signInWithBaseScope(options: { refreshTokens: boolean }) {
    google.user = person('stepper');
    const oauth = new WatchedOAuthClient(options);
    const agent = new UserAgent();
    const session = await connectThroughUpstream(gatehouse.url, 'google', { oauth, agent });
    expect(oauth.requested[0]?.searchParams.get('scope')).toBe('mcp google.calendar');
    expect(oauth.savedTokens?.scope).toBe('mcp');
    return { ...session, oauth, agent };
  }

  it('answers a tools/call outside the token’s scope with 403 insufficient_scope naming every scope needed, before the tool runs', async () => {
    const { client, transport, oauth } = await signInWithBaseScope({ refreshTokens: true });
    const calls = { ...api.calls };

    const response = await mcpPost(
      gatehouse.url,
      String(oauth.savedTokens?.access_token),
      { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'google_calendar_list_calendars', arguments: {} } },
      transport.sessionId,
    );
    expect(response.status).toBe(403);
    const challenge = response.headers.get('www-authenticate') ?? '';
    expect(challenge).toMatch(/^Bearer /);
    expect(challenge).toContain('error="insufficient_scope"');
    expect(challenge).toContain('scope="mcp google.calendar"');
    expect(challenge).toContain(`resource_metadata="${gatehouse.url}/.well-known/oauth-protected-resource/mcp"`);
    expect(await response.json()).toMatchObject({ error: 'insufficient_scope' });
    expect(api.calls).toEqual(calls);

    // The base scope still covers discovery and identity: every tool is listed, so a model sees what needs a step-up.
    const { tools } = await client.listTools();
    expect(tools.map((tool) => tool.name)).toEqual(
      expect.arrayContaining(['whoami', 'google_calendar_list_calendars', 'google_calendar_list_events']),
    );
    expect((await client.callTool({ name: 'whoami', arguments: {} })).isError).toBeFalsy();
    await client.close();
  });

  it('lets the SDK client step up: it re-authorizes for the added scope, the consent page marks it New, and the call then works', async () => {
    // Without a refresh token the SDK answers the 403 by authorizing again with the challenge's scope.
    const { client, transport, oauth, agent } = await signInWithBaseScope({ refreshTokens: false });
    expect(oauth.savedTokens?.refresh_token).toBeUndefined();

    await expect(calendarsOf(client)).rejects.toBeInstanceOf(UnauthorizedError);
    const again = oauth.requested.at(-1);
    expect(oauth.requested).toHaveLength(2);
    expect(again?.searchParams.get('scope')).toBe('mcp google.calendar');
    expect(api.calls.calendarList).toBe(0);

    // The same browser, still signed in to Gatehouse: the consent page shows what the client already
    // has and, marked New, what it asks for in addition.
    const atClient = (url: string) => url.startsWith(oauth.redirectUrl);
    const consent = await agent.followUntil(String(again), atClient);
    expect(consent.url).toMatch(new RegExp(`^${gatehouse.url}/interaction/`));
    const html = await consent.response.text();
    const items = [...html.matchAll(/<li>([\s\S]*?)<\/li>/g)].map((match) => match[1] ?? '');
    const family = items.find((item) => item.includes('<code class="scope-name">google.calendar</code>'));
    const base = items.find((item) => item.includes('<code class="scope-name">mcp</code>'));
    expect(family).toContain('Read your Google calendars and their events');
    expect(family).toContain('badge-added');
    expect(base).toBeDefined();
    expect(base).not.toContain('badge-added');

    // The user approves with the account they are signed in with; the code goes back to the SDK.
    const approved = await agent.followUntil(new URL(formAction(html, 'name="provider"'), gatehouse.url).href, atClient, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: hiddenField(html, '_csrf'), provider: '_current' }).toString(),
    });
    const code = new URL(approved.url).searchParams.get('code');
    expect(code, approved.url).toBeTruthy();
    await transport.finishAuth(code as string);
    expect(oauth.savedTokens?.scope?.split(' ').sort()).toEqual(['google.calendar', 'mcp']);

    const result = await calendarsOf(client);
    expect(result.isError, JSON.stringify(result.content)).toBeFalsy();
    expect((result.structuredContent as { calendars: unknown[] }).calendars).toHaveLength(1);
    expect(api.calls.calendarList).toBe(1);
    // Still the same Gatehouse account, with the base tools as before.
    expect((await client.callTool({ name: 'whoami', arguments: {} })).isError).toBeFalsy();
    await client.close();
  });

  it('sends a browser that approved the base scope straight to the only provider only for that scope: a step-up shows the consent page', async () => {
    const { client, oauth, agent } = await signInWithBaseScope({ refreshTokens: true });
    await client.close();
    // The Gatehouse session ends; the browser still remembers approving this client for `mcp`.
    agent.forgetCookies(/^_session/);
    const request = (scope: string) => {
      const url = new URL(oauth.requested[0] as URL);
      url.searchParams.set('scope', scope);
      url.searchParams.set('state', `state-${scope.length}`);
      return url.href;
    };
    const leavesGatehouse = (url: string) => !url.startsWith(gatehouse.url);
    const same = await agent.followUntil(request('mcp'), leavesGatehouse);
    expect(same.url.startsWith(google.issuer)).toBe(true);

    const more = await agent.followUntil(request('mcp google.calendar'), leavesGatehouse);
    expect(more.url).toMatch(new RegExp(`^${gatehouse.url}/interaction/`));
    // Signed out of Gatehouse, the page cannot know what this user granted before; it lists everything asked for.
    expect(await more.response.text()).toContain('Read your Google calendars and their events');
  });

  it('never widens a token’s scope on refresh (RFC 6749 §6), so the SDK’s refresh-first step-up (1.x) meets the same 403', async () => {
    const { client, oauth } = await signInWithBaseScope({ refreshTokens: true });
    const refreshToken = oauth.savedTokens?.refresh_token;
    const calls = api.calls.calendarList;

    const error = await calendarsOf(client).catch((caught: unknown) => caught);
    // typescript-sdk#2255: with a refresh token the 1.x SDK refreshes instead of authorizing again.
    expect(error).toBeInstanceOf(StreamableHTTPError);
    expect((error as StreamableHTTPError).code).toBe(403);
    expect(oauth.savedTokens?.refresh_token).not.toBe(refreshToken);
    expect(oauth.savedTokens?.scope).toBe('mcp');
    expect(oauth.requested).toHaveLength(1);
    expect(api.calls.calendarList).toBe(calls);
    await client.close();
  });
});
