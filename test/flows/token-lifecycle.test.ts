import { randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { connectWithLogin } from '../support/mcp-client.ts';
import { authorizeWithDemoLogin, INITIALIZE, mcpPost, postForm, registerClient, tokenRequest } from '../support/oauth.ts';

describe('token lifecycle', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());
  afterEach(() => {
    vi.useRealTimers();
  });

  const authorize = async () => {
    const { client_id: clientId } = await registerClient(gatehouse.url, { client_name: 'Lifecycle' });
    return {
      clientId,
      ...(await authorizeWithDemoLogin(gatehouse.url, { clientId, user: { email: 'grace@example.com', name: 'Grace' } })),
    };
  };
  const exchange = (grant: Awaited<ReturnType<typeof authorize>>) =>
    tokenRequest(gatehouse.url, {
      grant_type: 'authorization_code',
      code: grant.code,
      code_verifier: grant.verifier,
      redirect_uri: grant.redirectUri,
      client_id: grant.clientId,
      resource: gatehouse.config.resourceUrl,
    });
  const refresh = (clientId: string, refreshToken: string) =>
    tokenRequest(gatehouse.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId });
  /** The status /mcp answers an initialize with this token. */
  const mcpStatus = async (accessToken: string): Promise<number> => {
    const response = await mcpPost(gatehouse.url, accessToken, INITIALIZE);
    await response.body?.cancel();
    return response.status;
  };

  it('rotates refresh tokens and treats reuse of an older token as theft, revoking the grant (RFC 9700 §4.14.2)', async () => {
    const grant = await authorize();
    const first = await exchange(grant);
    expect(first.status).toBe(200);
    const second = await refresh(grant.clientId, first.body.refresh_token as string);
    expect(second.status).toBe(200);
    expect(second.body.refresh_token).not.toBe(first.body.refresh_token);
    const third = await refresh(grant.clientId, second.body.refresh_token as string);
    expect(third.status).toBe(200);
    // The first token is no longer the immediate predecessor: its reuse is theft, and the grant dies.
    const reuse = await refresh(grant.clientId, first.body.refresh_token as string);
    expect(reuse).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await mcpStatus(third.body.access_token as string)).toBe(401);
    expect((await refresh(grant.clientId, third.body.refresh_token as string)).body.error).toBe('invalid_grant');
  });

  it('lets the immediate predecessor refresh again within the grace window, so parallel refreshes both succeed', async () => {
    const grant = await authorize();
    const first = await exchange(grant);
    const [a, b] = await Promise.all([
      refresh(grant.clientId, first.body.refresh_token as string),
      refresh(grant.clientId, first.body.refresh_token as string),
    ]);
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    // A lost response: the same predecessor once more, still inside the window.
    const retry = await refresh(grant.clientId, first.body.refresh_token as string);
    expect(retry.status).toBe(200);
    expect(await mcpStatus(a.body.access_token as string)).toBe(200);
    expect(await mcpStatus(retry.body.access_token as string)).toBe(200);
  });

  it('refuses the immediate predecessor once the grace window has passed, and revokes the grant', async () => {
    const grant = await authorize();
    const first = await exchange(grant);
    const second = await refresh(grant.clientId, first.body.refresh_token as string);
    expect(second.status).toBe(200);
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 31_000);
    const late = await refresh(grant.clientId, first.body.refresh_token as string);
    expect(late).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await mcpStatus(second.body.access_token as string)).toBe(401);
  });

  it('answers a second exchange of the same code by the same client with invalid_grant and keeps the first tokens (ChatGPT double POST)', async () => {
    const grant = await authorize();
    const first = await exchange(grant);
    expect(first.status).toBe(200);
    const again = await exchange(grant);
    expect(again).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await mcpStatus(first.body.access_token as string)).toBe(200);
    expect((await refresh(grant.clientId, first.body.refresh_token as string)).status).toBe(200);
  });

  it('revokes the grant when a code is replayed with another verifier (RFC 6749 §4.1.2)', async () => {
    const grant = await authorize();
    const first = await exchange(grant);
    const replay = await exchange({ ...grant, verifier: randomBytes(32).toString('base64url') });
    expect(replay).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await mcpStatus(first.body.access_token as string)).toBe(401);
  });

  it('lets two concurrent exchanges of one code produce exactly one set of tokens', async () => {
    const grant = await authorize();
    const results = await Promise.all([exchange(grant), exchange(grant)]);
    const winners = results.filter((result) => result.status === 200);
    expect(winners).toHaveLength(1);
    expect(results.find((result) => result.status !== 200)?.body.error).toBe('invalid_grant');
    expect(await mcpStatus(winners[0]?.body.access_token as string)).toBe(200);
  });

  it('lets the MCP SDK client recover from an expired access token by refreshing it itself, with rotation', async () => {
    const { oauth, client } = await connectWithLogin(gatehouse.url);
    const before = { ...oauth.savedTokens };
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + (gatehouse.config.accessTokenTtl + 60) * 1000);
    expect(await mcpStatus(before.access_token as string)).toBe(401);
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(result.isError).toBeFalsy();
    expect(oauth.savedTokens?.access_token).not.toBe(before.access_token);
    expect(oauth.savedTokens?.refresh_token).not.toBe(before.refresh_token);
    await client.close();
  });

  it('revokes an access token at /revoke (RFC 7009), after which /mcp answers 401', async () => {
    const { oauth, client } = await connectWithLogin(gatehouse.url);
    await client.close();
    const accessToken = oauth.savedTokens?.access_token as string;
    expect(await mcpStatus(accessToken)).toBe(200);
    const revoked = await postForm(`${gatehouse.url}/revoke`, { token: accessToken, client_id: oauth.clientInfo?.client_id as string });
    expect(revoked.status).toBe(200);
    expect(await mcpStatus(accessToken)).toBe(401);
  });
});
