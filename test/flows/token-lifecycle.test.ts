import { createHash, randomBytes } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { approveWithDemoLogin, connectWithLogin } from '../support/mcp-client.ts';
import { UserAgent } from '../support/user-agent.ts';

/** A public client registered by DCR, with an authorization code obtained through consent and the demo login. */
async function authorize(origin: string, clientId?: string) {
  const redirectUri = 'http://127.0.0.1:9/callback';
  const id =
    clientId ??
    (
      (await (
        await fetch(`${origin}/register`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ client_name: 'Lifecycle', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }),
        })
      ).json()) as { client_id: string }
    ).client_id;
  const verifier = randomBytes(32).toString('base64url');
  const url = new URL('/authorize', origin);
  url.search = new URLSearchParams({
    response_type: 'code',
    client_id: id,
    redirect_uri: redirectUri,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    state: 'st',
    resource: `${origin}/mcp`,
  }).toString();
  const landed = await approveWithDemoLogin(new UserAgent(), origin, url.href, { email: 'grace@example.com', name: 'Grace' });
  return { clientId: id, redirectUri, verifier, code: landed.searchParams.get('code') ?? '' };
}

async function token(origin: string, fields: Record<string, string>) {
  const response = await fetch(`${origin}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields),
  });
  return { status: response.status, body: (await response.json()) as Record<string, string> };
}

async function callWhoami(origin: string, accessToken: string): Promise<number> {
  const response = await fetch(`${origin}/mcp`, {
    method: 'POST',
    headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } },
    }),
  });
  await response.body?.cancel();
  return response.status;
}

describe('token lifecycle', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());

  const exchange = async (grant: Awaited<ReturnType<typeof authorize>>) =>
    token(gatehouse.url, {
      grant_type: 'authorization_code',
      code: grant.code,
      code_verifier: grant.verifier,
      redirect_uri: grant.redirectUri,
      client_id: grant.clientId,
      resource: `${gatehouse.url}/mcp`,
    });
  const refresh = async (clientId: string, refreshToken: string) =>
    token(gatehouse.url, { grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('rotates refresh tokens and treats reuse of an older token as theft, revoking the grant (RFC 9700 §4.14.2)', async () => {
    const grant = await authorize(gatehouse.url);
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
    expect(await callWhoami(gatehouse.url, third.body.access_token as string)).toBe(401);
    expect((await refresh(grant.clientId, third.body.refresh_token as string)).body.error).toBe('invalid_grant');
  });

  it('lets the immediate predecessor refresh again within the grace window, so parallel refreshes both succeed', async () => {
    const grant = await authorize(gatehouse.url);
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
    expect(await callWhoami(gatehouse.url, a.body.access_token as string)).toBe(200);
    expect(await callWhoami(gatehouse.url, retry.body.access_token as string)).toBe(200);
  });

  it('refuses the immediate predecessor once the grace window has passed, and revokes the grant', async () => {
    const grant = await authorize(gatehouse.url);
    const first = await exchange(grant);
    const second = await refresh(grant.clientId, first.body.refresh_token as string);
    expect(second.status).toBe(200);
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + 31_000);
    const late = await refresh(grant.clientId, first.body.refresh_token as string);
    expect(late).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await callWhoami(gatehouse.url, second.body.access_token as string)).toBe(401);
  });

  it('answers a second exchange of the same code by the same client with invalid_grant and keeps the first tokens (ChatGPT double POST)', async () => {
    const grant = await authorize(gatehouse.url);
    const first = await exchange(grant);
    expect(first.status).toBe(200);
    const again = await exchange(grant);
    expect(again).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await callWhoami(gatehouse.url, first.body.access_token as string)).toBe(200);
    expect((await refresh(grant.clientId, first.body.refresh_token as string)).status).toBe(200);
  });

  it('revokes the grant when a code is replayed with another verifier (RFC 6749 §4.1.2)', async () => {
    const grant = await authorize(gatehouse.url);
    const first = await exchange(grant);
    const replay = await exchange({ ...grant, verifier: randomBytes(32).toString('base64url') });
    expect(replay).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
    expect(await callWhoami(gatehouse.url, first.body.access_token as string)).toBe(401);
  });

  it('lets two concurrent exchanges of one code produce exactly one set of tokens', async () => {
    const grant = await authorize(gatehouse.url);
    const results = await Promise.all([exchange(grant), exchange(grant)]);
    const winners = results.filter((result) => result.status === 200);
    expect(winners).toHaveLength(1);
    expect(results.find((result) => result.status !== 200)?.body.error).toBe('invalid_grant');
    expect(await callWhoami(gatehouse.url, winners[0]?.body.access_token as string)).toBe(200);
  });

  it('lets the MCP SDK client recover from an expired access token by refreshing it itself, with rotation', async () => {
    const { oauth, client } = await connectWithLogin(gatehouse.url);
    const before = { ...oauth.savedTokens };
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + (gatehouse.config.accessTokenTtl + 60) * 1000);
    expect(await callWhoami(gatehouse.url, before.access_token as string)).toBe(401);
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
    expect(await callWhoami(gatehouse.url, accessToken)).toBe(200);
    const clientId = oauth.clientInfo?.client_id as string;
    const revoked = await fetch(`${gatehouse.url}/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token: accessToken, client_id: clientId }),
    });
    expect(revoked.status).toBe(200);
    expect(await callWhoami(gatehouse.url, accessToken)).toBe(401);
  });
});
