import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BackendError, requestBackend } from '../../src/mcp/proxy.ts';
import { type BackendMcp, startBackendMcp } from '../support/backend-mcp.ts';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import { type FakeOwnerRez, startFakeOwnerRez } from '../support/fake-ownerrez.ts';
import { connectThroughUpstream, federationEnv, finishAuthorization, GOOGLE_CLIENT, OWNERREZ_CLIENT } from '../support/federation.ts';
import { freePort, startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { TestOAuthClient } from '../support/mcp-client.ts';
import { INITIALIZE, tokenRequest } from '../support/oauth.ts';
import { UserAgent } from '../support/user-agent.ts';

type Connected = Awaited<ReturnType<typeof connectThroughUpstream>>;
type TextResult = { content?: { type: string; text?: string }[]; isError?: boolean };

const ECHO = { name: 'echo_bearer', arguments: {} };
const textOf = (result: unknown): string => ((result as TextResult).content ?? []).map((part) => part.text ?? '').join('');
const tokenOf = (connected: Connected): string => connected.oauth.savedTokens?.access_token as string;

let rpcId = 100;

/** A request to Gatehouse's /mcp as the SDK transport sends it, raw, so the test sees status and headers. */
function mcp(
  origin: string,
  token: string,
  init: { method?: string; body?: unknown; sessionId?: string | undefined; headers?: Record<string, string>; signal?: AbortSignal } = {},
): Promise<Response> {
  const method = init.method ?? 'POST';
  return fetch(`${origin}/mcp`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      accept: method === 'GET' ? 'text/event-stream' : 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...(init.body ? { 'content-type': 'application/json' } : {}),
      ...(init.sessionId ? { 'mcp-session-id': init.sessionId } : {}),
      ...init.headers,
    },
    ...(init.body ? { body: JSON.stringify(init.body) } : {}),
    ...(init.signal ? { signal: init.signal } : {}),
  });
}

const rpc = (method: string, params: object = {}) => ({ jsonrpc: '2.0', id: ++rpcId, method, params });

/** Polls until `check` holds (streams open and close asynchronously), failing after `ms`. */
async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error('condition not reached in time');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Signs in through `provider` and gets tokens, without opening an MCP session (which a failing backend would refuse). */
async function signIn(origin: string, provider: string): Promise<TestOAuthClient> {
  const oauth = new TestOAuthClient();
  const transport = new StreamableHTTPClientTransport(new URL('/mcp', origin), { authProvider: oauth });
  await expect(new Client({ name: 'flow-test', version: '1.0.0' }).connect(transport)).rejects.toBeInstanceOf(UnauthorizedError);
  await finishAuthorization(transport, oauth, new UserAgent(), origin, provider);
  return oauth;
}

function upstreamStatus(gatehouse: TestGatehouse, email: string): string | undefined {
  const db = new Database(gatehouse.databasePath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[string], { status: string }>('SELECT status FROM upstream_accounts WHERE email = ?').get(email)?.status;
  } finally {
    db.close();
  }
}

describe('proxy mode: /mcp forwarded to a backend MCP server with the caller’s upstream token', () => {
  let google: FakeOidc;
  let ownerrez: FakeOwnerRez;
  let backend: BackendMcp;
  let gatehouse: TestGatehouse;
  /** The email the fake Google token was issued for, as the fake's userinfo says (what a real backend would learn). */
  let userinfoUrl: string;
  const emailOf = async (bearer: string): Promise<string> =>
    ((await (await fetch(userinfoUrl, { headers: { authorization: `Bearer ${bearer}` } })).json()) as { email: string }).email;
  /** POSTs the backend received on one session. */
  const postsOn = (sessionId: string | undefined) =>
    backend.seen.filter((request) => request.method === 'POST' && request.headers['mcp-session-id'] === sessionId).length;
  const connectAs = (email: string, name: string): Promise<Connected> => {
    google.user = { email, name };
    return connectThroughUpstream(gatehouse.url, 'google');
  };

  beforeAll(async () => {
    [google, ownerrez, backend] = await Promise.all([
      startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret }),
      startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret }),
      startBackendMcp(),
    ]);
    gatehouse = await startGatehouse({
      ...federationEnv({ google, ownerrez }),
      MCP_BACKEND_URL: backend.url,
      MCP_BACKEND_PROVIDER: 'google',
    });
    userinfoUrl = ((await (await fetch(`${google.issuer}/.well-known/openid-configuration`)).json()) as { userinfo_endpoint: string })
      .userinfo_endpoint;
  });

  afterAll(async () => {
    // An SDK client's aborted SSE GET can leave fetch holding a fresh connection that never sends a request,
    // which Node closes only at headersTimeout (60 s); nothing of the app's is lost by cutting it.
    const closing = gatehouse?.close();
    gatehouse?.app.server.closeAllConnections();
    await closing;
    await Promise.all([backend?.close(), google?.close(), ownerrez?.close()]);
  });

  it("serves the backend's tools instead of its own to the real SDK client, and round-trips the backend's session id", async () => {
    const ada = await connectAs('ada@example.com', 'Ada');
    const { tools } = await ada.client.listTools();
    expect(tools.map((tool) => tool.name).sort()).toEqual(['echo_bearer', 'wait_with_progress']); // no whoami: instead of, not beside
    const result = await ada.client.callTool(ECHO);
    expect(google.issuedTokens()).toContain(textOf(result));
    expect(await emailOf(textOf(result))).toBe('ada@example.com');
    expect(backend.sessionIds()).toContain(ada.transport.sessionId);
    await ada.client.close();
  });

  it('records each forwarded tools/call in the audit trail with the backend status, never its arguments', async () => {
    const ada = await connectAs('ada.audit@example.com', 'Ada');
    await ada.client.callTool(ECHO);
    const db = new Database(gatehouse.databasePath, { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare(
        "SELECT tool, decision, outcome, upstream_status AS upstreamStatus FROM tool_audit WHERE tool = 'echo_bearer'",
      );
      // Audit rows are written every 100 ms (FLUSH_MS).
      await expect.poll(() => rows.all()).toContainEqual({ tool: 'echo_bearer', decision: 'allowed', outcome: 'ok', upstreamStatus: 200 });
    } finally {
      db.close();
    }
    await ada.client.close();
  });

  it("sends the backend each caller's own upstream token, never a Gatehouse token, cookie or client header", async () => {
    const ada = await connectAs('ada.two@example.com', 'Ada');
    const bob = await connectAs('bob@example.com', 'Bob');
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        (i % 2 === 0 ? ada : bob).client.callTool(ECHO).then((result) => ({ i, bearer: textOf(result) })),
      ),
    );
    for (const { i, bearer } of results) expect(await emailOf(bearer)).toBe(i % 2 === 0 ? 'ada.two@example.com' : 'bob@example.com');
    expect(new Set(results.map((result) => result.bearer)).size).toBe(2);

    const before = backend.seen.length;
    const raw = await mcp(gatehouse.url, tokenOf(ada), {
      body: rpc('tools/list'),
      sessionId: ada.transport.sessionId,
      headers: { cookie: 'session=browser-cookie', origin: gatehouse.url, 'x-forwarded-for': '203.0.113.9', 'user-agent': 'client/1.0' },
    });
    expect(raw.status).toBe(200);
    await raw.text();
    const forwarded = backend.seen.slice(before);
    expect(forwarded).toHaveLength(1);
    expect(forwarded[0]?.headers).not.toHaveProperty('cookie');
    expect(forwarded[0]?.headers).not.toHaveProperty('origin');
    expect(forwarded[0]?.headers).not.toHaveProperty('x-forwarded-for');
    expect(forwarded[0]?.headers['user-agent']).toMatch(/^Gatehouse\//);
    expect(forwarded[0]?.headers['mcp-session-id']).toBe(ada.transport.sessionId);

    // Every request the backend ever saw carried an upstream canary, and no Gatehouse-issued token anywhere in its headers.
    const gatehouseTokens = [ada, bob].flatMap(({ oauth }) => [oauth.savedTokens?.access_token, oauth.savedTokens?.refresh_token]);
    expect(gatehouseTokens.every(Boolean)).toBe(true);
    const upstreamTokens = google.issuedTokens();
    for (const { bearer, headers } of backend.seen) {
      expect(upstreamTokens).toContain(bearer);
      for (const token of gatehouseTokens) expect(JSON.stringify(headers)).not.toContain(token);
    }
    await Promise.all([ada.client.close(), bob.client.close()]);
  });

  it("keeps a backend session to the user and client that opened it: another user's token gets 404 and reaches nothing", async () => {
    const ada = await connectAs('ada.three@example.com', 'Ada');
    const eve = await connectAs('eve@example.com', 'Eve');
    const before = postsOn(ada.transport.sessionId);
    const hijack = await mcp(gatehouse.url, tokenOf(eve), { body: rpc('tools/call', ECHO), sessionId: ada.transport.sessionId });
    expect(hijack.status).toBe(404);
    expect(await hijack.json()).toMatchObject({ error: { message: 'Session not found' } });
    expect(postsOn(ada.transport.sessionId)).toBe(before);
    const own = await mcp(gatehouse.url, tokenOf(ada), { body: rpc('tools/list'), sessionId: ada.transport.sessionId });
    expect(own.status).toBe(200);
    await own.text();
    await Promise.all([ada.client.close(), eve.client.close()]);
  });

  it("streams a tool's progress on its POST's SSE answer while the tool is still running", async () => {
    const ada = await connectAs('ada.progress@example.com', 'Ada');
    const progress: number[] = [];
    const started = Date.now();
    // The tool finishes only once the client saw its progress: a buffering proxy would hold both until the tool's 10 s fallback.
    const result = await ada.client.callTool({ name: 'wait_with_progress', arguments: {} }, undefined, {
      onprogress: ({ progress: value }) => {
        progress.push(value);
        backend.release();
      },
    });
    expect(textOf(result)).toBe('released');
    expect(progress).toEqual([1]);
    expect(Date.now() - started).toBeLessThan(5000);
    await ada.client.close();
  });

  it('streams server notifications on the GET SSE stream', async () => {
    const ada = await connectAs('ada.sse@example.com', 'Ada');
    const sessionId = ada.transport.sessionId as string;
    let notified = false;
    ada.client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      notified = true;
    });
    // The SDK client opens its GET stream in the background after initializing; until the backend holds it,
    // a notification has nowhere to go and is dropped, so send until one arrives.
    await eventually(() => backend.seen.some((request) => request.method === 'GET' && request.headers['mcp-session-id'] === sessionId));
    await eventually(() => {
      if (!notified) void backend.notifyToolListChanged(sessionId);
      return notified;
    });
    await ada.client.close();
  });

  it('ends the backend session on DELETE and forgets its id', async () => {
    const ada = await connectAs('ada.delete@example.com', 'Ada');
    const sessionId = ada.transport.sessionId as string;
    expect(backend.sessionIds()).toContain(sessionId);
    await ada.transport.terminateSession();
    expect(backend.sessionIds()).not.toContain(sessionId);
    const before = postsOn(sessionId);
    const after = await mcp(gatehouse.url, tokenOf(ada), { body: rpc('tools/list'), sessionId });
    expect(after.status).toBe(404);
    await after.text();
    expect(postsOn(sessionId)).toBe(before);
    await ada.client.close();
  });

  it('aborts the backend stream when the client goes away, and ends the client stream when the backend ends it', async () => {
    const ada = await connectAs('ada.abort@example.com', 'Ada');
    await ada.client.close();
    const token = tokenOf(ada);
    // A session of its own: the backend allows one GET stream per session, and the SDK client holds its session's.
    const opened = await mcp(gatehouse.url, token, { body: INITIALIZE });
    const sessionId = opened.headers.get('mcp-session-id') as string;
    await opened.text();
    expect(sessionId).toBeTruthy();

    const streams = backend.openStreams();
    const leaving = new AbortController();
    const stream = await mcp(gatehouse.url, token, { method: 'GET', sessionId, signal: leaving.signal });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
    await eventually(() => backend.openStreams() === streams + 1);
    leaving.abort();
    await eventually(() => backend.openStreams() === streams, 2000);

    const second = await mcp(gatehouse.url, token, { method: 'GET', sessionId });
    expect(second.status).toBe(200);
    await eventually(() => backend.openStreams() === streams + 1);
    const reader = second.body?.getReader() as ReadableStreamDefaultReader<Uint8Array>;
    backend.endStreams();
    const ended = async () => {
      for (;;) if ((await reader.read()).done) return;
    };
    await expect(
      ended().then(
        () => 'ended',
        () => 'ended',
      ),
    ).resolves.toBe('ended');
  });

  it('refreshes the upstream token once and retries when the backend refuses it once', async () => {
    const ada = await connectAs('ada.refresh@example.com', 'Ada');
    const first = textOf(await ada.client.callTool(ECHO));
    const refreshes = google.calls.token.refresh_token;
    const before = backend.seen.length;
    backend.failNext('unauthorized');
    const result = await ada.client.callTool(ECHO);
    expect(result.isError).toBeFalsy();
    expect(google.calls.token.refresh_token - refreshes).toBe(1);
    const second = textOf(result);
    expect(second).not.toBe(first);
    expect(await emailOf(second)).toBe('ada.refresh@example.com');
    expect(backend.seen.slice(before).map((request) => request.bearer)).toEqual([first, second]);
    await ada.client.close();
  });

  it("answers 401 with Gatehouse's challenge and retires the grant when the backend refuses the refreshed token too", async () => {
    const carol = await connectAs('carol@example.com', 'Carol');
    const refreshes = google.calls.token.refresh_token;
    backend.failNext('unauthorized', 2);
    const reply = await mcp(gatehouse.url, tokenOf(carol), { body: rpc('tools/call', ECHO), sessionId: carol.transport.sessionId });
    expect(reply.status).toBe(401);
    const challenge = reply.headers.get('www-authenticate') as string;
    expect(challenge).toMatch(
      /^Bearer .*error="invalid_token".*resource_metadata="http:\/\/localhost:\d+\/\.well-known\/oauth-protected-resource\/mcp"/,
    );
    expect(challenge).not.toContain('backend.invalid'); // the backend's own challenge stays behind Gatehouse
    expect(await reply.json()).toMatchObject({ error: 'invalid_token' });
    expect(google.calls.token.refresh_token - refreshes).toBe(1);
    expect(upstreamStatus(gatehouse, 'carol@example.com')).toBe('dead');
    // The grant's death ended Carol's Gatehouse tokens: the next request and our refresh token are refused, so the client re-authorizes.
    const next = await mcp(gatehouse.url, tokenOf(carol), { body: rpc('tools/list'), sessionId: carol.transport.sessionId });
    expect(next.status).toBe(401);
    const refreshed = await tokenRequest(gatehouse.url, {
      grant_type: 'refresh_token',
      refresh_token: carol.oauth.savedTokens?.refresh_token as string,
      client_id: carol.oauth.clientInfo?.client_id as string,
    });
    expect(refreshed).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    await carol.client.close();
  });

  it('answers 403 with a clear message to a caller who has no account of the backend’s provider', async () => {
    ownerrez.user = { id: 4242, email: 'owner@example.com', firstName: 'Olive', lastName: 'Owner' };
    const oauth = await signIn(gatehouse.url, 'ownerrez');
    const before = backend.seen.filter((request) => request.method === 'POST').length;
    const reply = await mcp(gatehouse.url, oauth.savedTokens?.access_token as string, { body: INITIALIZE });
    expect(reply.status).toBe(403);
    const body = (await reply.json()) as { error: string; error_description: string };
    expect(body.error).toBe('access_denied');
    expect(body.error_description).toMatch(/Google/);
    expect(backend.seen.filter((request) => request.method === 'POST').length).toBe(before);
  });

  it('answers 502 at once when the backend drops the connection', async () => {
    const ada = await connectAs('ada.drop@example.com', 'Ada');
    backend.failNext('drop');
    const started = Date.now();
    const reply = await mcp(gatehouse.url, tokenOf(ada), { body: rpc('tools/call', ECHO), sessionId: ada.transport.sessionId });
    expect(reply.status).toBe(502);
    expect(await reply.json()).toEqual({
      error: 'temporarily_unavailable',
      error_description: 'the backend MCP server could not be reached',
    });
    expect(Date.now() - started).toBeLessThan(2000);
    expect(textOf(await ada.client.callTool(ECHO))).toBeTruthy(); // the next call goes through
    await ada.client.close();
  });

  it('answers 502 at once when nothing listens at MCP_BACKEND_URL', async () => {
    const down = await startGatehouse({
      ...federationEnv({ google }),
      MCP_BACKEND_URL: `http://127.0.0.1:${await freePort()}/mcp`,
      MCP_BACKEND_PROVIDER: 'google',
    });
    try {
      google.user = { email: 'down@example.com', name: 'Down' };
      const oauth = await signIn(down.url, 'google');
      const started = Date.now();
      const reply = await mcp(down.url, oauth.savedTokens?.access_token as string, { body: INITIALIZE });
      expect(reply.status).toBe(502);
      expect(await reply.json()).toMatchObject({ error: 'temporarily_unavailable' });
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await down.close();
    }
  });

  it('gives up on a backend that accepts the request but never answers (504), and on one that is not there (502)', async () => {
    backend.failNext('hang');
    const started = Date.now();
    const hung = requestBackend(
      new URL(backend.url),
      { method: 'POST', headers: {}, body: Buffer.from('{}') },
      { connectMs: 1000, responseMs: 300 },
    );
    await expect(hung).rejects.toMatchObject({ name: 'BackendError', kind: 'timeout' });
    expect(Date.now() - started).toBeLessThan(1500);
    const refused = requestBackend(
      new URL(`http://127.0.0.1:${await freePort()}/mcp`),
      { method: 'GET', headers: {} },
      { connectMs: 1000, responseMs: 0 },
    );
    await expect(refused).rejects.toBeInstanceOf(BackendError);
    await expect(refused).rejects.toMatchObject({ kind: 'unreachable' });
  });
});
