import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { connectWithLogin } from '../support/mcp-client.ts';
import { authorizeWithDemoLogin, INITIALIZE, mcpPost, registerClient, tokenRequest } from '../support/oauth.ts';

const listTools = { jsonrpc: '2.0', id: 2, method: 'tools/list', params: {} };

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
    const hijack = await mcpPost(gatehouse.url, bob.oauth.savedTokens?.access_token as string, listTools, aliceSession);
    expect(hijack.status).toBe(404);
    const own = await mcpPost(gatehouse.url, alice.oauth.savedTokens?.access_token as string, listTools, aliceSession);
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
    const opened = await mcpPost(gatehouse.url, token, INITIALIZE);
    const sessionId = opened.headers.get('mcp-session-id') as string;
    await opened.body?.cancel();
    const deleted = await fetch(`${gatehouse.url}/mcp`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${token}`, 'mcp-session-id': sessionId, 'mcp-protocol-version': '2025-06-18' },
    });
    expect(deleted.status).toBe(200);
    const after = await mcpPost(gatehouse.url, token, listTools, sessionId);
    expect(after.status).toBe(404);
  });

  it("closes a user's least recently used session when one user opens more than 32", async () => {
    const { oauth, client } = await connectWithLogin(gatehouse.url, { user: { email: 'many@example.com', name: 'Many' } });
    await client.close();
    const token = oauth.savedTokens?.access_token as string;
    const ids: string[] = [];
    for (let i = 0; i < 33; i++) {
      const opened = await mcpPost(gatehouse.url, token, INITIALIZE);
      ids.push(opened.headers.get('mcp-session-id') as string);
      await opened.body?.cancel();
    }
    const first = await mcpPost(gatehouse.url, token, listTools, ids[0]);
    await first.body?.cancel();
    expect(first.status).toBe(404);
    const last = await mcpPost(gatehouse.url, token, listTools, ids[32]);
    await last.body?.cancel();
    expect(last.status).toBe(200);
  });

  it('answers 403 insufficient_scope, naming the scope needed, for a token granted without it (RFC 6750 §3.1)', async () => {
    const origin = gatehouse.url;
    const { client_id: clientId } = await registerClient(origin, { client_name: 'OIDC only' });
    const grant = await authorizeWithDemoLogin(origin, {
      clientId,
      scope: 'openid',
      user: { email: 'narrow@example.com', name: 'Narrow' },
    });
    const { body: tokens } = await tokenRequest(origin, {
      grant_type: 'authorization_code',
      code: grant.code,
      code_verifier: grant.verifier,
      redirect_uri: grant.redirectUri,
      client_id: clientId,
      resource: `${origin}/mcp`,
    });
    const response = await mcpPost(origin, tokens.access_token as string, INITIALIZE);
    expect(response.status).toBe(403);
    const challenge = response.headers.get('www-authenticate') ?? '';
    expect(challenge).toContain('error="insufficient_scope"');
    expect(challenge).toContain('scope="mcp"');
    expect(challenge).toContain(`resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"`);
  });
});
