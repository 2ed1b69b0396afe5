import { createHash, randomBytes } from 'node:crypto';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js';
import type { FakeOidc, FakeUser } from './fake-oidc.ts';
import type { FakeOwnerRez } from './fake-ownerrez.ts';
import { TestOAuthClient } from './mcp-client.ts';
import { formAction, hiddenField, UserAgent } from './user-agent.ts';

export const ENTRA_CLIENT = { id: 'entra-client-id', secret: 'entra~secret+/=%' };
export const GOOGLE_CLIENT = { id: 'google-client-id.apps.googleusercontent.com', secret: 'GOCSPX-google+secret/=' };
export const OWNERREZ_CLIENT = { id: 'c_ownerrez+id/=', secret: 's_ownerrez%secret+/=' };

/**
 * The environment that points Gatehouse's providers at local fakes (DESIGN.md §2 variables only).
 * Entra is single-tenant (ENTRA_TENANT_ID = the fake's tenant) unless `entraMultiTenant` lists tenants.
 */
export function federationEnv(
  fakes: { entra?: FakeOidc; google?: FakeOidc; ownerrez?: FakeOwnerRez },
  options: { entraTenantId?: string; entraAllowedTenants?: string[] } = {},
): Record<string, string> {
  const env: Record<string, string> = {};
  if (fakes.entra) {
    Object.assign(env, { ENTRA_CLIENT_ID: ENTRA_CLIENT.id, ENTRA_CLIENT_SECRET: ENTRA_CLIENT.secret });
    if (options.entraAllowedTenants) {
      Object.assign(env, {
        ENTRA_TENANT_ID: 'organizations',
        ENTRA_ISSUER: fakes.entra.multiTenantIssuer,
        ENTRA_ALLOWED_TENANTS: options.entraAllowedTenants.join(','),
      });
    } else {
      Object.assign(env, { ENTRA_TENANT_ID: options.entraTenantId ?? tenantOf(fakes.entra.issuer), ENTRA_ISSUER: fakes.entra.issuer });
    }
  }
  if (fakes.google)
    Object.assign(env, {
      GOOGLE_CLIENT_ID: GOOGLE_CLIENT.id,
      GOOGLE_CLIENT_SECRET: GOOGLE_CLIENT.secret,
      GOOGLE_ISSUER: fakes.google.issuer,
    });
  if (fakes.ownerrez) {
    Object.assign(env, {
      OWNERREZ_CLIENT_ID: OWNERREZ_CLIENT.id,
      OWNERREZ_CLIENT_SECRET: OWNERREZ_CLIENT.secret,
      OWNERREZ_AUTHORIZE_URL: fakes.ownerrez.authorizeUrl,
      OWNERREZ_API_URL: fakes.ownerrez.url,
    });
  }
  return env;
}

/** `http://127.0.0.1:p/<tenant>/v2.0` → `<tenant>`. */
export const tenantOf = (issuer: string): string => new URL(issuer).pathname.split('/')[1] as string;

/**
 * What a person does in the browser: open the authorization URL, pick `provider` on the consent page
 * (unless the browser is sent on without one), get through the upstream (the fakes approve at once)
 * and back through the callback. Returns the first URL outside Gatehouse and the fakes' redirect
 * chain: the client's redirect URI, or the page the chain ended on.
 */
export async function approveWithUpstream(
  agent: UserAgent,
  origin: string,
  authorizationUrl: string,
  provider: string,
  redirectUri: string,
): Promise<{ url: URL; response: Response }> {
  const atClient = (url: string) => url.startsWith(redirectUri);
  let step = await agent.followUntil(authorizationUrl, atClient);
  if (!atClient(step.url) && step.url.startsWith(`${origin}/interaction/`) && step.response.status === 200) {
    const html = await step.response.text();
    step = await agent.followUntil(new URL(formAction(html, 'name="provider"'), origin).href, atClient, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: hiddenField(html, '_csrf'), provider }).toString(),
    });
  }
  return { url: new URL(step.url), response: step.response };
}

/** Connects the real SDK client to /mcp; its first 401 sends the user through `provider`'s login. */
export async function connectThroughUpstream(
  origin: string,
  provider: string,
  options: { oauth?: TestOAuthClient; agent?: UserAgent } = {},
): Promise<{ client: Client; transport: StreamableHTTPClientTransport; oauth: TestOAuthClient; agent: UserAgent }> {
  const oauth = options.oauth ?? new TestOAuthClient();
  const agent = options.agent ?? new UserAgent();
  const mcpUrl = new URL('/mcp', origin);
  const first = new StreamableHTTPClientTransport(mcpUrl, { authProvider: oauth });
  try {
    await new Client({ name: 'flow-test', version: '1.0.0' }).connect(first);
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  if (oauth.authorizationUrl) {
    await finishAuthorization(first, oauth, agent, origin, provider);
  }
  const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: oauth });
  const client = new Client({ name: 'flow-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport, oauth, agent };
}

/** Drives the browser part of an authorization the SDK asked for, and hands the code back to the SDK. */
export async function finishAuthorization(
  transport: StreamableHTTPClientTransport,
  oauth: TestOAuthClient,
  agent: UserAgent,
  origin: string,
  provider: string,
): Promise<void> {
  const { url } = await approveWithUpstream(agent, origin, String(oauth.authorizationUrl), provider, oauth.redirectUrl);
  const code = url.searchParams.get('code');
  if (!code) throw new Error(`authorization did not return a code: ended at ${url.origin}${url.pathname}`);
  await transport.finishAuth(code);
  oauth.authorizationUrl = undefined;
}

/**
 * The first half of `approveWithUpstream`: open the authorization URL, pick `provider` on the consent
 * page, get through the upstream, and stop at its redirect back to `/upstream/<provider>/callback?code=…&state=…`
 * without delivering it, so a test can deliver, replay or alter it, or deliver it from another browser.
 */
export async function stopAtUpstreamCallback(agent: UserAgent, origin: string, authorizationUrl: string, provider: string): Promise<URL> {
  const atCallback = (url: string) => url.startsWith(`${origin}/upstream/`) && new URL(url).pathname.endsWith('/callback');
  const consent = await agent.followUntil(authorizationUrl, atCallback);
  if (consent.response.status !== 200 || !consent.url.startsWith(`${origin}/interaction/`))
    throw new Error(`expected the consent page, got ${consent.response.status} at ${new URL(consent.url).pathname}`);
  const html = await consent.response.text();
  const step = await agent.followUntil(new URL(formAction(html, 'name="provider"'), origin).href, atCallback, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ _csrf: hiddenField(html, '_csrf'), provider }).toString(),
  });
  if (!atCallback(step.url)) throw new Error(`the upstream did not come back: ${step.response.status} at ${new URL(step.url).pathname}`);
  return new URL(step.url);
}

/**
 * The user changes their profile at the IdP. The fake serves userinfo from the claims of the user's
 * last sign-in there, so this sets `fake.user` and signs in at the fake once more, in a fresh browser
 * through a throwaway loopback redirect whose code nobody exchanges: Gatehouse sees nothing of it.
 * Keep the upstream id (`oid` at Entra, `sub` at Google) fixed in `user` to change the same person.
 */
export async function changeProfileUpstream(fake: FakeOidc, clientId: string, user: FakeUser): Promise<void> {
  fake.user = user;
  const discovery = (await (await fetch(`${fake.issuer}/.well-known/openid-configuration`)).json()) as { authorization_endpoint: string };
  const redirectUri = 'http://127.0.0.1:9/profile-change';
  const url = new URL(discovery.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope: 'openid email profile',
    code_challenge: createHash('sha256').update(randomBytes(32).toString('base64url')).digest('base64url'),
    code_challenge_method: 'S256',
    state: randomBytes(12).toString('base64url'),
    nonce: randomBytes(12).toString('base64url'),
  }).toString();
  const { url: landed } = await new UserAgent().followUntil(url.href, (next) => next.startsWith(redirectUri));
  if (!new URL(landed).searchParams.get('code'))
    throw new Error(`the profile change did not complete a sign-in at the fake: ended at ${landed}`);
}

/** One HTTP exchange as a client saw it: request line, status, headers and the body read so far. */
export interface RecordedResponse {
  request: string;
  status: number;
  headers: string;
  body: string;
}

/**
 * A `fetch` that keeps every response it hands back, for canary greps. Bodies are read from a clone
 * chunk by chunk, so a streamed response (SSE) is recorded as far as it got even if it never ends.
 */
export function recordingFetch(): { fetch: FetchLike; responses: RecordedResponse[]; settled(): Promise<void> } {
  const responses: RecordedResponse[] = [];
  const reads: Promise<void>[] = [];
  const recorder: FetchLike = async (url, init) => {
    const response = await fetch(url, init);
    const record: RecordedResponse = {
      request: `${init?.method ?? 'GET'} ${String(url)}`,
      status: response.status,
      headers: [...response.headers].map(([name, value]) => `${name}: ${value}`).join('\n'),
      body: '',
    };
    responses.push(record);
    const reader = response.clone().body?.getReader();
    const decoder = new TextDecoder();
    const read = async () => {
      for (let chunk = await reader?.read(); chunk && !chunk.done; chunk = await reader?.read()) {
        record.body += decoder.decode(chunk.value, { stream: true });
      }
    };
    reads.push(read().catch(() => {})); // an aborted stream keeps what it recorded
    return response;
  };
  return {
    fetch: recorder,
    responses,
    // Every body read to its end (or its abort): close the client first, or an open SSE stream never ends.
    settled: async () => {
      await Promise.all(reads);
    },
  };
}

/**
 * `connectThroughUpstream` with every HTTP request of the MCP client going through `fetch`: the
 * SDK's auth flow (metadata, DCR, token) uses the transport's `fetch` too.
 */
export async function connectThroughUpstreamWithFetch(
  origin: string,
  provider: string,
  fetch: FetchLike,
  options: { oauth?: TestOAuthClient; agent?: UserAgent } = {},
): Promise<{ client: Client; transport: StreamableHTTPClientTransport; oauth: TestOAuthClient; agent: UserAgent }> {
  const oauth = options.oauth ?? new TestOAuthClient();
  const agent = options.agent ?? new UserAgent();
  const mcpUrl = new URL('/mcp', origin);
  const first = new StreamableHTTPClientTransport(mcpUrl, { authProvider: oauth, fetch });
  try {
    await new Client({ name: 'flow-test', version: '1.0.0' }).connect(first);
  } catch (error) {
    if (!(error instanceof UnauthorizedError)) throw error;
  }
  if (oauth.authorizationUrl) await finishAuthorization(first, oauth, agent, origin, provider);
  const transport = new StreamableHTTPClientTransport(mcpUrl, { authProvider: oauth, fetch });
  const client = new Client({ name: 'flow-test', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport, oauth, agent };
}

/**
 * A browser whose IdP cookies can go while Gatehouse's stay (Gatehouse is `localhost`, the fakes
 * `127.0.0.1`): the user signs out at Microsoft or Google to sign in there as another of their
 * accounts, and links it to the Gatehouse account they are still signed in to.
 */
export class SwitchingUserAgent extends UserAgent {
  private upstream = new UserAgent();
  private readonly origin: string;
  constructor(origin: string) {
    super();
    this.origin = origin;
  }
  override request(url: string, init: RequestInit = {}): Promise<Response> {
    return url.startsWith(this.origin) ? super.request(url, init) : this.upstream.request(url, init);
  }
  signOutUpstream(): void {
    this.upstream = new UserAgent();
  }
}

/**
 * Links another upstream account to the Gatehouse account `agent` is signed in to (DESIGN.md: only
 * while signed in): a new MCP client's login in the same browser, after signing out at the IdP, so
 * the IdP signs in whoever its `user` is now. `oauth` is that new MCP client. Returns it, connected.
 */
export async function linkUpstreamAccount(
  origin: string,
  provider: string,
  agent: SwitchingUserAgent,
  oauth: TestOAuthClient = new TestOAuthClient(),
): Promise<{ client: Client; transport: StreamableHTTPClientTransport; oauth: TestOAuthClient; agent: UserAgent }> {
  agent.signOutUpstream();
  return connectThroughUpstream(origin, provider, { agent, oauth });
}

/**
 * An MCP client that asks for `scope` (e.g. `mcp google.calendar`) instead of the scope of the server's
 * 401 challenge, which the SDK otherwise asks for: the base `mcp`. A client configured with the tool
 * families it needs does this; one that is not steps up on its first 403 (test/flows/step-up.test.ts).
 */
export class ScopedOAuthClient extends TestOAuthClient {
  private readonly scope: string;
  constructor(scope: string, clientMetadata?: ConstructorParameters<typeof TestOAuthClient>[0]) {
    super(clientMetadata);
    this.scope = scope;
  }
  override redirectToAuthorization(url: URL): void {
    url.searchParams.set('scope', this.scope);
    super.redirectToAuthorization(url);
  }
}

/**
 * A scoped MCP client that, like a real one, forgets tokens the authorization server refused: after a
 * failed refresh the SDK then sends the user through authorization again instead of failing the call.
 */
export class ReconnectingOAuthClient extends ScopedOAuthClient {
  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery') {
    if (scope === 'all' || scope === 'tokens') this.savedTokens = undefined;
    if (scope === 'all' || scope === 'client') this.clientInfo = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = '';
  }
}

let rawRpcId = 10_000;

/**
 * A JSON-RPC request on an SDK client's own MCP session, sent raw so a test sees the HTTP status and
 * headers (401/403/429/503 and their challenges) that the SDK turns into exceptions.
 */
export async function rawMcpCall<Body>(
  origin: string,
  session: { transport: StreamableHTTPClientTransport; oauth: TestOAuthClient },
  method: string,
  params: object = {},
): Promise<{ status: number; headers: Headers; body: Body }> {
  const response = await fetch(`${origin}/mcp`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${session.oauth.savedTokens?.access_token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': session.transport.protocolVersion ?? '2025-06-18',
      'mcp-session-id': session.transport.sessionId ?? '',
    },
    body: JSON.stringify({ jsonrpc: '2.0', id: ++rawRpcId, method, params }),
  });
  const text = await response.text();
  return { status: response.status, headers: response.headers, body: text ? JSON.parse(text) : {} };
}
