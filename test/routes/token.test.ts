import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { authorizeWithDemoLogin, LOOPBACK_REDIRECT, mcpPost, registerClient as register } from '../support/oauth.ts';

const REDIRECT_URI = LOOPBACK_REDIRECT;
const INSPECTOR = 'http://localhost:6274';

interface Client {
  client_id: string;
  client_secret?: string;
}
interface Tokens {
  access_token: string;
  refresh_token: string;
  scope: string;
  token_type: string;
  expires_in: number;
}

let gatehouse: TestGatehouse;
let client: Client;

const registerClient = (body: Record<string, unknown> = {}): Promise<Client> =>
  register(gatehouse.url, { client_name: 'Token Test', ...body });

/** Runs /authorize through consent and the demo login in a fresh browser and returns the code with its verifier. */
const authorizationCode = (clientId = client.client_id) =>
  authorizeWithDemoLogin(gatehouse.url, { clientId, state: 'token-test', user: { email: 'tess@example.com', name: 'Tess Token' } });

const form = (path: string, body: string | Record<string, string>, contentType = 'application/x-www-form-urlencoded') =>
  fetch(`${gatehouse.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body: typeof body === 'string' ? body : new URLSearchParams(body).toString(),
  });

async function exchange(code: string, verifier: string, clientId = client.client_id): Promise<Tokens> {
  const response = await form('/token', {
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    redirect_uri: REDIRECT_URI,
    client_id: clientId,
  });
  expect(response.status).toBe(200);
  return (await response.json()) as Tokens;
}

/** An RFC 6749 §5.2 error response. */
async function expectOAuthError(response: Response, status: number, error: string): Promise<void> {
  expect(response.status).toBe(status);
  expect(response.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await response.json()) as { error: string; error_description?: string };
  expect(body.error).toBe(error);
}

beforeAll(async () => {
  gatehouse = await startGatehouse();
  client = await registerClient();
});
afterAll(async () => gatehouse?.close());

describe('POST /token: authorization_code grant (OAuth 2.1 §4.1.3)', () => {
  it('exchanges a code and its verifier for an access token and a refresh token', async () => {
    const { code, verifier } = await authorizationCode();
    const tokens = await exchange(code, verifier);
    expect(tokens).toMatchObject({ token_type: 'Bearer', scope: 'mcp', expires_in: 900 });
    expect(tokens.access_token).toEqual(expect.any(String));
    expect(tokens.refresh_token).toEqual(expect.any(String));
  });

  it('refuses a wrong code_verifier with invalid_grant (RFC 7636 §4.6)', async () => {
    const { code } = await authorizationCode();
    const response = await form('/token', {
      grant_type: 'authorization_code',
      code,
      code_verifier: randomBytes(32).toString('base64url'),
      redirect_uri: REDIRECT_URI,
      client_id: client.client_id,
    });
    await expectOAuthError(response, 400, 'invalid_grant');
  });

  it('refuses a missing code_verifier with invalid_grant', async () => {
    const { code } = await authorizationCode();
    const response = await form('/token', {
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      client_id: client.client_id,
    });
    await expectOAuthError(response, 400, 'invalid_grant');
  });

  it('refuses an unknown code with invalid_grant', async () => {
    const response = await form('/token', {
      grant_type: 'authorization_code',
      code: randomBytes(32).toString('base64url'),
      code_verifier: randomBytes(32).toString('base64url'),
      redirect_uri: REDIRECT_URI,
      client_id: client.client_id,
    });
    await expectOAuthError(response, 400, 'invalid_grant');
  });

  it("refuses another client's code with invalid_grant", async () => {
    const { code, verifier } = await authorizationCode();
    const other = await registerClient({ client_name: 'Other' });
    const response = await form('/token', {
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      redirect_uri: REDIRECT_URI,
      client_id: other.client_id,
    });
    await expectOAuthError(response, 400, 'invalid_grant');
  });
});

describe('POST /token: malformed requests get a 4xx OAuth error, never a 5xx', () => {
  it('refuses an unsupported grant type with unsupported_grant_type', async () => {
    for (const grant_type of ['password', 'client_credentials', 'urn:ietf:params:oauth:grant-type:device_code', 'implicit']) {
      await expectOAuthError(await form('/token', { grant_type, client_id: client.client_id }), 400, 'unsupported_grant_type');
    }
  });

  it('refuses a garbage refresh token with invalid_grant', async () => {
    await expectOAuthError(
      await form('/token', { grant_type: 'refresh_token', refresh_token: 'garbage', client_id: client.client_id }),
      400,
      'invalid_grant',
    );
  });

  it('refuses a duplicated parameter with invalid_request (RFC 6749 §3.2)', async () => {
    await expectOAuthError(
      await form('/token', `grant_type=refresh_token&refresh_token=abc&refresh_token=abc&client_id=${client.client_id}`),
      400,
      'invalid_request',
    );
    await expectOAuthError(
      await form('/token', `grant_type=refresh_token&grant_type=refresh_token&refresh_token=abc&client_id=${client.client_id}`),
      400,
      'invalid_request',
    );
  });

  it('refuses a JSON body with invalid_request (RFC 6749 §3.2: form-encoded only)', async () => {
    const body = JSON.stringify({ grant_type: 'refresh_token', refresh_token: 'abc', client_id: client.client_id });
    await expectOAuthError(await form('/token', body, 'application/json'), 400, 'invalid_request');
  });

  it('refuses a body without a content type with invalid_request', async () => {
    const response = await fetch(`${gatehouse.url}/token`, { method: 'POST', body: new Blob([`grant_type=refresh_token&client_id=x`]) });
    await expectOAuthError(response, 400, 'invalid_request');
  });

  it.each([
    ['percent-encoding garbage', '%%%&&&==&grant_type'],
    ['a truncated escape', 'grant_type=authorization_code&code=%E0%A4%A'],
    ['an empty body', ''],
  ])('refuses a malformed form body (%s) with invalid_request', async (_label, body) => {
    await expectOAuthError(await form('/token', body), 400, 'invalid_request');
  });

  it('refuses an oversized body with invalid_request', async () => {
    const body = `grant_type=refresh_token&client_id=${client.client_id}&refresh_token=${'a'.repeat(200 * 1024)}`;
    await expectOAuthError(await form('/token', body), 400, 'invalid_request');
  });

  it('answers GET /token with a 4xx', async () => {
    const response = await fetch(`${gatehouse.url}/token`);
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
  });
});

describe('POST /token: refresh_token grant', () => {
  it('rotates the refresh token and issues a new access token for the same resource', async () => {
    const { code, verifier } = await authorizationCode();
    const first = await exchange(code, verifier);
    const response = await form('/token', { grant_type: 'refresh_token', refresh_token: first.refresh_token, client_id: client.client_id });
    expect(response.status).toBe(200);
    const second = (await response.json()) as Tokens;
    expect(second.access_token).not.toBe(first.access_token);
    expect(second.refresh_token).not.toBe(first.refresh_token);
    expect(second.scope).toBe('mcp');
  });
});

describe('/introspect (RFC 7662) and /revoke (RFC 7009)', () => {
  const introspect = async (token: string, clientId = client.client_id) =>
    (await (await form('/introspect', { token, client_id: clientId })).json()) as Record<string, unknown>;

  it('says a live access token is active, with its audience, scope and client, to the client that owns it', async () => {
    const { code, verifier } = await authorizationCode();
    const tokens = await exchange(code, verifier);
    expect(await introspect(tokens.access_token)).toMatchObject({
      active: true,
      aud: gatehouse.config.resourceUrl,
      scope: 'mcp',
      client_id: client.client_id,
      iss: gatehouse.config.publicUrl,
      token_type: 'Bearer',
    });
  });

  it("says another public client's token is inactive", async () => {
    const { code, verifier } = await authorizationCode();
    const tokens = await exchange(code, verifier);
    const other = await registerClient({ client_name: 'Nosy Public Client' });
    expect(await introspect(tokens.access_token, other.client_id)).toEqual({ active: false });
  });

  it('requires client authentication', async () => {
    await expectOAuthError(await form('/introspect', { token: 'anything' }), 400, 'invalid_request');
  });

  it('revokes an access token: introspection says inactive and /mcp refuses it', async () => {
    const { code, verifier } = await authorizationCode();
    const tokens = await exchange(code, verifier);
    const revoked = await form('/revoke', { token: tokens.access_token, client_id: client.client_id });
    expect(revoked.status).toBe(200);
    expect(await introspect(tokens.access_token)).toEqual({ active: false });
    const mcp = await mcpPost(gatehouse.url, tokens.access_token, {});
    await mcp.body?.cancel();
    expect(mcp.status).toBe(401);
  });

  it('revokes a refresh token: it no longer refreshes', async () => {
    const { code, verifier } = await authorizationCode();
    const tokens = await exchange(code, verifier);
    expect(
      (await form('/revoke', { token: tokens.refresh_token, token_type_hint: 'refresh_token', client_id: client.client_id })).status,
    ).toBe(200);
    expect(await introspect(tokens.refresh_token)).toEqual({ active: false });
    await expectOAuthError(
      await form('/token', { grant_type: 'refresh_token', refresh_token: tokens.refresh_token, client_id: client.client_id }),
      400,
      'invalid_grant',
    );
  });

  it('answers 200 for an unknown token (RFC 7009 §2.2)', async () => {
    expect((await form('/revoke', { token: 'garbage', client_id: client.client_id })).status).toBe(200);
  });

  it('does not let another public client revoke a token it does not own', async () => {
    const { code, verifier } = await authorizationCode();
    const tokens = await exchange(code, verifier);
    const other = await registerClient({ client_name: 'Hostile Public Client' });
    await form('/revoke', { token: tokens.access_token, client_id: other.client_id });
    expect(await introspect(tokens.access_token)).toMatchObject({ active: true });
  });
});

describe('/token CORS for browser clients (MCP Inspector)', () => {
  it('answers the preflight and echoes the Origin', async () => {
    const response = await fetch(`${gatehouse.url}/token`, {
      method: 'OPTIONS',
      headers: { origin: INSPECTOR, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe(INSPECTOR);
  });
});
