import { createPublicKey, type JsonWebKey, verify } from 'node:crypto';
import * as oidc from 'openid-client';
import { afterEach, describe, expect, it } from 'vitest';
import { type FakeOidc, type FakeOidcOptions, startFakeOidc } from '../support/fake-oidc.ts';
import { UserAgent } from '../support/user-agent.ts';

const CLIENT_ID = 'gatehouse-test-client';
// Characters that break naive percent-encoding in Basic auth, as real Entra secrets have (DESIGN.md §5).
const CLIENT_SECRET = 'Q~s3cr+t/with%=chars';
const REDIRECT_URI = 'http://localhost:4567/upstream/fake/callback';

const fakes: FakeOidc[] = [];
afterEach(async () => {
  await Promise.all(fakes.splice(0).map((fake) => fake.close()));
});

async function start(shape: FakeOidcOptions['shape'], options: Partial<FakeOidcOptions> = {}): Promise<FakeOidc> {
  const fake = await startFakeOidc({ shape, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, slowMs: 300, ...options });
  fakes.push(fake);
  return fake;
}

/** The relying party: openid-client v6 over http, with the client authentication each IdP takes. */
function discover(fake: FakeOidc, auth: 'post' | 'basic' = 'post'): Promise<oidc.Configuration> {
  const method = auth === 'post' ? oidc.ClientSecretPost(CLIENT_SECRET) : oidc.ClientSecretBasic(CLIENT_SECRET);
  return oidc.discovery(new URL(fake.issuer), CLIENT_ID, undefined, method, { execute: [oidc.allowInsecureRequests] });
}

/** Sends a browser through the authorization endpoint; the fake signs in by itself and redirects back with a code. */
async function authorize(config: oidc.Configuration, params: Record<string, string>) {
  const verifier = oidc.randomPKCECodeVerifier();
  const state = oidc.randomState();
  const nonce = oidc.randomNonce();
  const url = oidc.buildAuthorizationUrl(config, {
    redirect_uri: REDIRECT_URI,
    code_challenge: await oidc.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
    ...params,
  });
  const { url: landed } = await new UserAgent().follow(url.href, url.origin);
  return { callback: new URL(landed), verifier, state, nonce };
}

async function login(config: oidc.Configuration, params: Record<string, string>) {
  const { callback, verifier, state, nonce } = await authorize(config, params);
  return oidc.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
}

const ENTRA_LOGIN = { scope: 'openid profile email offline_access User.Read', prompt: 'select_account' };
const GOOGLE_LOGIN = { scope: 'openid email profile', access_type: 'offline', prompt: 'consent' };

/** How openid-client reports an ID token claim that fails its check (the signature having passed). */
const claimRejected = (claim: string) => ({
  code: 'OAUTH_JWT_CLAIM_COMPARISON_FAILED',
  cause: { message: expect.stringContaining(`"${claim}"`) },
});

async function discoveryDocument(issuer: string): Promise<Record<string, unknown>> {
  return (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as Record<string, unknown>;
}

describe('fake Entra ID', () => {
  it('serves discovery at the tenant issuer, without RFC 9207 or RFC 7009, and client_secret_post only', async () => {
    const fake = await start('entra');
    expect(fake.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/11111111-1111-4111-8111-111111111111\/v2\.0$/);
    const document = await discoveryDocument(fake.issuer);
    expect(document.issuer).toBe(fake.issuer);
    expect(document.authorization_response_iss_parameter_supported).toBeUndefined();
    expect(document.revocation_endpoint).toBeUndefined();
    expect(document.token_endpoint_auth_methods_supported).toEqual(['client_secret_post']);
    expect(fake.calls.discovery).toBe(1);
  });

  it("serves the multi-tenant document with the {tenantid} issuer template and this tenant's endpoints", async () => {
    const fake = await start('entra', { tenantId: 'aaaaaaaa-0000-4000-8000-000000000000' });
    const origin = new URL(fake.issuer).origin;
    expect(fake.multiTenantIssuer).toBe(`${origin}/organizations/v2.0`);
    const document = await discoveryDocument(fake.multiTenantIssuer);
    expect(document.issuer).toBe(`${origin}/{tenantid}/v2.0`);
    expect(document.token_endpoint).toBe((await discoveryDocument(fake.issuer)).token_endpoint);
  });

  it('completes a code flow with PKCE S256, state and nonce, answering without iss (no RFC 9207)', async () => {
    const fake = await start('entra', { accessTokenTtl: 120 });
    const config = await discover(fake);
    const { callback, verifier, state, nonce } = await authorize(config, ENTRA_LOGIN);
    expect(callback.searchParams.has('iss')).toBe(false);
    expect(callback.searchParams.get('state')).toBe(state);
    const tokens = await oidc.authorizationCodeGrant(config, callback, {
      pkceCodeVerifier: verifier,
      expectedState: state,
      expectedNonce: nonce,
    });

    const claims = tokens.claims();
    expect(claims).toMatchObject({ tid: '11111111-1111-4111-8111-111111111111', email: 'ada@example.com', name: 'Ada Lovelace', nonce });
    expect(claims?.oid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4/);
    expect(claims?.sub).not.toBe(claims?.oid);
    expect(tokens.expires_in).toBe(120);
    expect(tokens.access_token).toMatch(/^CANARY-entra-at-.{20,}/);
    expect(tokens.refresh_token).toMatch(/^CANARY-entra-rt-.{20,}/);
    expect(fake.issuedTokens()).toEqual([tokens.access_token, tokens.refresh_token]);

    expect(fake.lastAuthorizationParams?.get('code_challenge_method')).toBe('S256');
    expect(fake.lastAuthorizationParams?.has('resource')).toBe(false);
    expect(fake.lastTokenRequest?.params.get('client_secret')).toBe(CLIENT_SECRET);
    expect(fake.lastTokenRequest?.authorization).toBeUndefined();
    expect(fake.calls).toMatchObject({ authorize: 1, token: { authorization_code: 1, refresh_token: 0 } });
  });

  it('rotates the refresh token and refuses the one it replaced', async () => {
    const fake = await start('entra');
    const config = await discover(fake);
    const first = await login(config, ENTRA_LOGIN);
    const second = await oidc.refreshTokenGrant(config, first.refresh_token as string);
    expect(second.refresh_token).toMatch(/^CANARY-entra-rt-/);
    expect(second.refresh_token).not.toBe(first.refresh_token);
    await expect(oidc.refreshTokenGrant(config, first.refresh_token as string)).rejects.toMatchObject({ error: 'invalid_grant' });
    expect(fake.calls.token.refresh_token).toBe(2);
  });

  it('issues no refresh token without offline_access', async () => {
    const fake = await start('entra');
    const tokens = await login(await discover(fake), { scope: 'openid profile email' });
    expect(tokens.refresh_token).toBeUndefined();
  });

  it('answers userinfo for its access token', async () => {
    const fake = await start('entra');
    const config = await discover(fake);
    const tokens = await login(config, ENTRA_LOGIN);
    const userinfo = await oidc.fetchUserInfo(config, tokens.access_token, tokens.claims()?.sub as string);
    expect(userinfo).toMatchObject({ email: 'ada@example.com', name: 'Ada Lovelace', preferred_username: 'ada@example.com' });
    expect(fake.calls.userinfo).toBe(1);
  });

  it("signs a user of another tenant in with that tenant's issuer", async () => {
    const fake = await start('entra');
    fake.user = { email: 'guest@contoso.example', name: 'Guest', tid: 'bbbbbbbb-0000-4000-8000-000000000000' };
    await expect(login(await discover(fake), ENTRA_LOGIN)).rejects.toMatchObject(claimRejected('iss'));
  });

  it('refuses client_secret_basic and the v1 resource parameter', async () => {
    const fake = await start('entra');
    await expect(login(await discover(fake, 'basic'), ENTRA_LOGIN)).rejects.toMatchObject({ error: 'invalid_client' });
    const url = oidc.buildAuthorizationUrl(await discover(fake), {
      redirect_uri: REDIRECT_URI,
      scope: 'openid',
      resource: 'https://graph.microsoft.com',
    });
    const response = await fetch(url, { redirect: 'manual' });
    expect(response.status).toBe(400);
    expect(await response.text()).toContain('AADSTS901002');
  });
});

describe('fake Google', () => {
  it('serves discovery at the origin with a revocation endpoint and both secret methods', async () => {
    const fake = await start('google');
    expect(fake.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const document = await discoveryDocument(fake.issuer);
    expect(document.issuer).toBe(fake.issuer);
    expect(document.revocation_endpoint).toBe(`${fake.issuer}/revoke`);
    expect(document.token_endpoint_auth_methods_supported).toEqual(['client_secret_basic', 'client_secret_post']);
  });

  it('completes a code flow with the hd claim, and keeps its refresh token: refresh responses carry none', async () => {
    const fake = await start('google');
    fake.user = { email: 'ada@corp.example', name: 'Ada', hd: 'corp.example' };
    const config = await discover(fake, 'basic');
    const tokens = await login(config, GOOGLE_LOGIN);
    expect(tokens.claims()).toMatchObject({ email: 'ada@corp.example', email_verified: true, hd: 'corp.example' });
    expect(tokens.claims()?.sub).toMatch(/^\d{21}$/);
    expect(tokens.access_token).toMatch(/^CANARY-google-at-/);
    expect(tokens.refresh_token).toMatch(/^CANARY-google-rt-/);
    expect(fake.lastTokenRequest?.authorization).toMatch(/^Basic /);

    for (let round = 0; round < 2; round++) {
      const refreshed = await oidc.refreshTokenGrant(config, tokens.refresh_token as string);
      expect(refreshed.refresh_token).toBeUndefined();
      expect(refreshed.access_token).toMatch(/^CANARY-google-at-/);
    }
    expect(fake.calls.token).toEqual({ authorization_code: 1, refresh_token: 2 });
  });

  it('issues a refresh token only for access_type=offline, and again only with prompt=consent', async () => {
    const fake = await start('google');
    const config = await discover(fake);
    expect((await login(config, { scope: 'openid email' })).refresh_token).toBeUndefined();
    fake.user = { email: 'bob@example.com', name: 'Bob' };
    expect((await login(config, { scope: 'openid email', access_type: 'offline' })).refresh_token).toBeDefined();
    expect((await login(config, { scope: 'openid email', access_type: 'offline' })).refresh_token).toBeUndefined();
    expect((await login(config, GOOGLE_LOGIN)).refresh_token).toBeDefined();
  });

  it('revokes a grant at its RFC 7009 endpoint, with or without client authentication', async () => {
    const fake = await start('google');
    const config = await discover(fake);
    const first = await login(config, GOOGLE_LOGIN);
    await oidc.tokenRevocation(config, first.refresh_token as string);
    await expect(oidc.refreshTokenGrant(config, first.refresh_token as string)).rejects.toMatchObject({ error: 'invalid_grant' });

    const second = await login(config, GOOGLE_LOGIN);
    const response = await fetch(`${fake.issuer}/revoke`, { method: 'POST', body: new URLSearchParams({ token: second.access_token }) });
    expect(response.status).toBe(200);
    await expect(oidc.fetchUserInfo(config, second.access_token, oidc.skipSubjectCheck)).rejects.toThrow();
    expect(fake.calls.revoke).toBe(2);
  });
});

describe('fake IdP test controls', () => {
  it('re-signs a tampered ID token with its own key, so only claim checks catch it', async () => {
    const fake = await start('entra');
    const config = await discover(fake);
    fake.tamperNextIdToken({ tid: 'other-tenant' });
    const tokens = await login(config, ENTRA_LOGIN);
    expect(tokens.claims()?.tid).toBe('other-tenant');

    const jwks = (await (await fetch(config.serverMetadata().jwks_uri as string)).json()) as { keys: JsonWebKey[] };
    const [header, payload, signature] = (tokens.id_token as string).split('.') as [string, string, string];
    const key = createPublicKey({ key: jwks.keys[0] as JsonWebKey, format: 'jwk' });
    expect(verify('sha256', Buffer.from(`${header}.${payload}`), key, Buffer.from(signature, 'base64url'))).toBe(true);

    for (const [claim, value] of [
      ['iss', 'http://evil.example'],
      ['aud', 'another-client'],
      ['nonce', 'replayed'],
    ] as const) {
      fake.tamperNextIdToken({ [claim]: value });
      await expect(login(config, ENTRA_LOGIN)).rejects.toMatchObject(claimRejected(claim));
    }
  });

  it('makes later refreshes fail with invalid_grant once the user revokes consent upstream', async () => {
    const fake = await start('entra');
    const config = await discover(fake);
    const tokens = await login(config, ENTRA_LOGIN);
    fake.revokeAllGrants();
    await expect(oidc.refreshTokenGrant(config, tokens.refresh_token as string)).rejects.toMatchObject({ error: 'invalid_grant' });
  });

  it('accepts only registered redirect URIs when given a list, and more with allowRedirectUri', async () => {
    const fake = await start('google', { redirectUris: [] });
    const config = await discover(fake);
    const refused = await authorize(config, GOOGLE_LOGIN);
    expect(refused.callback.origin).toBe(fake.issuer);
    fake.allowRedirectUri(REDIRECT_URI);
    expect((await login(config, GOOGLE_LOGIN)).refresh_token).toBeDefined();
  });

  describe('fails the next token call once, then answers normally', () => {
    const cases: [Parameters<FakeOidc['failNext']>[1], (refresh: Promise<unknown>) => Promise<unknown>][] = [
      ['down', (refresh) => expect(refresh).rejects.toThrow()],
      ['500', (refresh) => expect(refresh).rejects.toMatchObject({ cause: { status: 500 } })],
      ['garbage', (refresh) => expect(refresh).rejects.toThrow()],
      ['invalid_grant', (refresh) => expect(refresh).rejects.toMatchObject({ error: 'invalid_grant' })],
      ['slow', (refresh) => expect(refresh).resolves.toMatchObject({ access_token: expect.stringMatching(/^CANARY-google-at-/) })],
    ];
    it.each(cases)('%s', async (mode, check) => {
      const fake = await start('google');
      const config = await discover(fake);
      const tokens = await login(config, GOOGLE_LOGIN);
      fake.failNext('token', mode);
      const started = Date.now();
      await check(oidc.refreshTokenGrant(config, tokens.refresh_token as string));
      if (mode === 'slow') expect(Date.now() - started).toBeGreaterThanOrEqual(300);
      await expect(oidc.refreshTokenGrant(config, tokens.refresh_token as string)).resolves.toBeDefined();
      expect(fake.calls.token.refresh_token).toBe(2);
    });
  });

  it('fails discovery, userinfo and revocation on request, counting each call', async () => {
    const fake = await start('google');
    const config = await discover(fake);
    const tokens = await login(config, GOOGLE_LOGIN);
    fake.failNext('discovery', '500');
    fake.failNext('userinfo', 'garbage', 2);
    fake.failNext('revoke', 'down');
    await expect(discover(fake)).rejects.toThrow();
    for (let attempt = 0; attempt < 2; attempt++) {
      await expect(oidc.fetchUserInfo(config, tokens.access_token, oidc.skipSubjectCheck)).rejects.toThrow();
    }
    await expect(oidc.tokenRevocation(config, tokens.access_token)).rejects.toThrow();
    await expect(discover(fake)).resolves.toBeDefined();
    await expect(oidc.fetchUserInfo(config, tokens.access_token, oidc.skipSubjectCheck)).resolves.toMatchObject({
      email: 'ada@example.com',
    });
    expect(fake.calls).toMatchObject({ discovery: 3, userinfo: 3, revoke: 1 });
  });

  it('stops waiting on a slow call when closed', async () => {
    const fake = await startFakeOidc({ shape: 'google', clientId: CLIENT_ID, clientSecret: CLIENT_SECRET });
    fake.failNext('discovery', 'slow');
    const pending = fetch(`${fake.issuer}/.well-known/openid-configuration`);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const started = Date.now();
    await fake.close();
    await expect(pending).rejects.toThrow();
    expect(Date.now() - started).toBeLessThan(1000);
  });
});
