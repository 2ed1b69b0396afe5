import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { approveWithDemoLogin, connectWithLogin } from '../support/mcp-client.ts';
import { UserAgent } from '../support/user-agent.ts';

const initialize = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};
const listTools = { jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} };

function post(origin: string, token: string, body: unknown, sessionId?: string) {
  return fetch(`${origin}/mcp`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${token}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
    },
    body: JSON.stringify(body),
  });
}

describe('MCP sessions and the bearer gate', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());

  it("binds a session to the token's user: another user's token cannot use its session id", async () => {
    const alice = await connectWithLogin(gatehouse.url, { user: { email: 'alice@example.com', name: 'Alice' } });
    const bob = await connectWithLogin(gatehouse.url, { user: { email: 'bob@example.com', name: 'Bob' } });
    const aliceSession = alice.transport.sessionId as string;
    expect(aliceSession).toBeTruthy();
    const hijack = await post(gatehouse.url, bob.oauth.savedTokens?.access_token as string, listTools, aliceSession);
    expect(hijack.status).toBe(404);
    const own = await post(gatehouse.url, alice.oauth.savedTokens?.access_token as string, listTools, aliceSession);
    expect(own.status).toBe(200);
    await own.body?.cancel();
    const whoami = await bob.client.callTool({ name: 'whoami', arguments: {} });
    expect(whoami.structuredContent).toMatchObject({ identities: [{ email: 'bob@example.com' }] });
    await alice.client.close();
    await bob.client.close();
  });

  it('forgets a session the client deleted (DELETE /mcp)', async () => {
    const { oauth } = await connectWithLogin(gatehouse.url);
    const token = oauth.savedTokens?.access_token as string;
    const opened = await post(gatehouse.url, token, initialize);
    const sessionId = opened.headers.get('mcp-session-id') as string;
    await opened.body?.cancel();
    const deleted = await fetch(`${gatehouse.url}/mcp`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${token}`, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' },
    });
    expect(deleted.status).toBe(200);
    const after = await post(gatehouse.url, token, listTools, sessionId);
    expect(after.status).toBe(404);
  });

  it('answers 403 insufficient_scope, naming the scope needed, for a token granted without it (RFC 6750 §3.1)', async () => {
    const origin = gatehouse.url;
    const redirectUri = 'http://127.0.0.1:9/callback';
    const { client_id } = (await (
      await fetch(`${origin}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ client_name: 'OIDC only', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }),
      })
    ).json()) as { client_id: string };
    const verifier = randomBytes(32).toString('base64url');
    const url = new URL('/authorize', origin);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id,
      redirect_uri: redirectUri,
      scope: 'openid',
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      resource: `${origin}/mcp`,
    }).toString();
    const landed = await approveWithDemoLogin(new UserAgent(), origin, url.href, { email: 'narrow@example.com', name: 'Narrow' });
    const tokens = (await (
      await fetch(`${origin}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code: landed.searchParams.get('code') as string,
          code_verifier: verifier,
          redirect_uri: redirectUri,
          client_id,
          resource: `${origin}/mcp`,
        }),
      })
    ).json()) as { access_token: string };
    const response = await post(origin, tokens.access_token, initialize);
    expect(response.status).toBe(403);
    const challenge = response.headers.get('www-authenticate') ?? '';
    expect(challenge).toContain('error="insufficient_scope"');
    expect(challenge).toContain('scope="mcp"');
    expect(challenge).toContain(`resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"`);
  });
});
