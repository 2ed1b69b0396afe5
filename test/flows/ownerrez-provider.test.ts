import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';
import { createOwnerRezProvider, readTokenResponse, readUser } from '../../src/upstream/ownerrez.ts';
import { UpstreamGrantError, UpstreamLoginError, type UpstreamLoginRequest, type UpstreamProvider } from '../../src/upstream/types.ts';
import { type FakeOwnerRez, type FakeOwnerRezOptions, startFakeOwnerRez } from '../support/fake-ownerrez.ts';

// Characters that RFC 6749 §2.3.1 form-encoding would change before Basic auth (+ / = %).
const CLIENT_ID = 'c_a+b/c=';
const CLIENT_SECRET = 's_x%y+z';
const TIMEOUT_MS = 1500;
const REDIRECT_URI = 'http://127.0.0.1:9/upstream/ownerrez/callback';

const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-ownerrez-'));
const fakes: FakeOwnerRez[] = [];
/** Every sign-in code the fakes handed out, so no error message may contain one. */
const seenCodes = new Set<string>();

afterEach(async () => {
  await Promise.all(fakes.splice(0).map((fake) => fake.close()));
});
afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

interface Setup {
  fake: FakeOwnerRez;
  provider: UpstreamProvider;
}

async function setup(fakeOptions: Partial<FakeOwnerRezOptions> = {}, env: Record<string, string> = {}): Promise<Setup> {
  const fake = await startFakeOwnerRez({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, slowMs: 5000, ...fakeOptions });
  fakes.push(fake);
  const config = loadConfig(
    {
      DATABASE_PATH: join(dataDir, 'gatehouse.db'),
      ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      COOKIE_SECRET: randomBytes(32).toString('base64url'),
      OWNERREZ_CLIENT_ID: CLIENT_ID,
      OWNERREZ_CLIENT_SECRET: CLIENT_SECRET,
      OWNERREZ_AUTHORIZE_URL: fake.authorizeUrl,
      OWNERREZ_API_URL: fake.url,
      ...env,
    },
    () => {},
  );
  const ownerrez = config.upstreams.ownerrez;
  if (!ownerrez) throw new Error('OwnerRez is not configured');
  return { fake, provider: createOwnerRezProvider(ownerrez, { timeoutMs: TIMEOUT_MS }) };
}

function loginRequest(): UpstreamLoginRequest {
  return { state: randomBytes(16).toString('base64url'), codeVerifier: 'unused', nonce: 'unused', redirectUri: REDIRECT_URI };
}

/** Plays the browser: follows startLogin to the fake's authorize page and returns the callback URL it redirects to. */
async function authorize(provider: UpstreamProvider, request: UpstreamLoginRequest): Promise<URL> {
  const response = await fetch(await provider.startLogin(request), { redirect: 'manual' });
  expect(response.status).toBe(302);
  const callback = new URL(response.headers.get('location') ?? '');
  expect(callback.searchParams.get('state')).toBe(request.state);
  seenCodes.add(callback.searchParams.get('code') ?? '');
  return callback;
}

async function signIn({ provider }: Setup) {
  const request = loginRequest();
  return provider.finishLogin(await authorize(provider, request), request);
}

/** Awaits a rejection and checks that nothing secret (canary token, client secret, sign-in code) is in it. */
async function failure(promise: Promise<unknown>, fake: FakeOwnerRez): Promise<Error> {
  const error = await promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (caught: unknown) => caught,
  );
  if (!(error instanceof Error)) throw new Error('expected an Error');
  const text = `${error.message}\n${error.stack}\n${JSON.stringify(error)}`;
  expect(text).not.toContain('CANARY');
  expect(text).not.toContain(CLIENT_SECRET);
  for (const token of fake.issuedTokens()) expect(text).not.toContain(token);
  for (const code of seenCodes) expect(text).not.toContain(code);
  return error;
}

function expectGrantError(error: Error, kind: 'terminal' | 'transient'): void {
  expect(error).toBeInstanceOf(UpstreamGrantError);
  expect((error as UpstreamGrantError).kind).toBe(kind);
}

describe('OwnerRez provider: sign-in', () => {
  it('sends the browser to the authorize URL with response_type, client_id, redirect_uri and state only (no PKCE, no scope)', async () => {
    const { provider, fake } = await setup();
    const url = await provider.startLogin({ ...loginRequest(), state: 'st-1' });
    expect(url.origin + url.pathname).toBe(fake.authorizeUrl);
    expect(Object.fromEntries(url.searchParams)).toEqual({
      response_type: 'code',
      client_id: CLIENT_ID,
      redirect_uri: REDIRECT_URI,
      state: 'st-1',
    });
  });

  it('authenticates with Basic base64(client_id:client_secret) of the raw credentials, not the form-encoded ones', async () => {
    const setupResult = await setup();
    const result = await signIn(setupResult);
    expect(result.tokens.accessToken).toMatch(/^CANARY-ownerrez-at-/);
    expect(result.tokens.refreshToken).toBeUndefined();
    const raw = Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64');
    expect(setupResult.fake.lastTokenRequest?.authorization).toBe(`Basic ${raw}`);
    expect(setupResult.fake.lastTokenRequest?.form.grant_type).toBe('authorization_code');
  });

  it('the fake refuses the RFC 6749 §2.3.1 form-encoded credentials with invalid_client (so the test above can fail)', async () => {
    const { fake } = await setup();
    const encoded = Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64');
    const response = await fetch(`${fake.url}/oauth/access_token`, {
      method: 'POST',
      headers: { authorization: `Basic ${encoded}`, 'content-type': 'application/x-www-form-urlencoded', 'user-agent': 'test' },
      body: 'grant_type=authorization_code&code=x',
    });
    expect(response.status).toBe(401);
    expect(await response.json()).toEqual({ error: 'invalid_client' });
  });

  it('reads the identity from /v2/users/me: the user id as subject, email, and first + last name', async () => {
    const context = await setup();
    context.fake.user = { id: 4242, email: 'wylie@acme.example', firstName: 'Wylie', lastName: 'Coyote' };
    const result = await signIn(context);
    expect(result.identity).toEqual({ subject: '4242', email: 'wylie@acme.example', name: 'Wylie Coyote' });
    expect(context.fake.calls.usersMe).toBe(1);
  });

  it('gives expiresAt from expires_in when OwnerRez sends one', async () => {
    const before = Math.floor(Date.now() / 1000);
    const result = await signIn(await setup({ expiresIn: 2_592_000 }));
    expect(result.tokens.expiresAt).toBeGreaterThanOrEqual(before + 2_592_000);
    expect(result.tokens.expiresAt).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 2_592_000);
  });

  it('leaves expiresAt undefined when the token response has no expires_in', async () => {
    const result = await signIn(await setup({ expiresIn: undefined }));
    expect(result.tokens.expiresAt).toBeUndefined();
  });

  it('repeats redirect_uri on the exchange when the switch is on and OwnerRez requires it', async () => {
    const context = await setup({ redirectUriOnExchange: 'required' }, { OWNERREZ_SEND_REDIRECT_URI: 'true' });
    await signIn(context);
    expect(context.fake.lastTokenRequest?.form.redirect_uri).toBe(REDIRECT_URI);
  });

  it('omits redirect_uri on the exchange when the switch is off and OwnerRez forbids it', async () => {
    const context = await setup({ redirectUriOnExchange: 'forbidden' }, { OWNERREZ_SEND_REDIRECT_URI: 'false' });
    await signIn(context);
    expect(context.fake.lastTokenRequest?.form).not.toHaveProperty('redirect_uri');
  });

  it('fails the sign-in with a user-facing error when the redirect_uri switch does not match what OwnerRez wants', async () => {
    for (const [rule, send] of [
      ['required', 'false'],
      ['forbidden', 'true'],
    ] as const) {
      const context = await setup({ redirectUriOnExchange: rule }, { OWNERREZ_SEND_REDIRECT_URI: send });
      const error = await failure(signIn(context), context.fake);
      expect(error).toBeInstanceOf(UpstreamLoginError);
    }
  });

  it('refuses a sign-in code used a second time (codes are single use)', async () => {
    const { provider, fake } = await setup();
    const request = loginRequest();
    const callback = await authorize(provider, request);
    await provider.finishLogin(callback, request);
    const error = await failure(provider.finishLogin(callback, request), fake);
    expect(error).toBeInstanceOf(UpstreamLoginError);
    expect(error.message).toBe('OwnerRez refused the sign-in code. Start again.');
  });

  it('refuses a callback without a code', async () => {
    const { provider, fake } = await setup();
    const error = await failure(provider.finishLogin(new URL(`${REDIRECT_URI}?state=x`), loginRequest()), fake);
    expect(error).toBeInstanceOf(UpstreamLoginError);
  });

  it('refuses the sign-in when the token response names another user than /v2/users/me', async () => {
    const context = await setup();
    context.fake.failNext('token', 'wrong_user_id');
    const error = await failure(signIn(context), context.fake);
    expect(error).toBeInstanceOf(UpstreamLoginError);
  });

  it('sends a User-Agent naming Gatehouse on the token, users/me and revoke calls', async () => {
    const context = await setup();
    const { tokens } = await signIn(context);
    await context.provider.revoke?.(tokens);
    const { calls, userAgents } = context.fake;
    expect(calls).toMatchObject({ token: 1, usersMe: 1, revoke: 1 });
    expect(userAgents).toHaveLength(3);
    for (const userAgent of userAgents) expect(userAgent).toMatch(/^Gatehouse\//);
  });

  it('refuses to build without a client secret, naming the variable', async () => {
    const { fake } = await setup();
    const env = {
      DATABASE_PATH: join(dataDir, 'gatehouse.db'),
      ENCRYPTION_KEY: randomBytes(32).toString('base64'),
      COOKIE_SECRET: randomBytes(32).toString('base64url'),
      OWNERREZ_CLIENT_ID: CLIENT_ID,
      OWNERREZ_API_URL: fake.url,
    };
    expect(() => loadConfig(env, () => {})).toThrow(ConfigError);
    expect(() => loadConfig(env, () => {})).toThrow(/^OWNERREZ_CLIENT_SECRET: required/);
  });

  it('has no refresh grant: an expired or revoked OwnerRez token means reconnecting', async () => {
    const { provider } = await setup();
    expect(provider.refresh).toBeUndefined();
  });
});

describe('OwnerRez provider: failures at the code exchange and identity call during sign-in', () => {
  for (const mode of ['down', 'slow', '500', 'garbage'] as const) {
    it(`treats a token endpoint that is ${mode} as transient`, async () => {
      const context = await setup();
      context.fake.failNext('token', mode);
      expectGrantError(await failure(signIn(context), context.fake), 'transient');
    });

    it(`treats /v2/users/me that is ${mode} during sign-in as transient`, async () => {
      const context = await setup();
      context.fake.failNext('usersMe', mode);
      expectGrantError(await failure(signIn(context), context.fake), 'transient');
    });
  }

  it('turns invalid_grant at the token endpoint into a user-facing sign-in error', async () => {
    const context = await setup();
    context.fake.failNext('token', 'invalid_grant');
    const error = await failure(signIn(context), context.fake);
    expect(error).toBeInstanceOf(UpstreamLoginError);
    expect(error.message).toBe('OwnerRez refused the sign-in code. Start again.');
  });

  it('turns invalid_client (wrong app credentials) into a sign-in error that points at the operator', async () => {
    const context = await setup({ clientSecret: 's_rotated' });
    const error = await failure(signIn(context), context.fake);
    expect(error).toBeInstanceOf(UpstreamLoginError);
    expect(error.message).toMatch(/app credentials/);
  });
});

describe('OwnerRez provider: grant calls', () => {
  it('fetchIdentity answers for a live token, and sees the profile as OwnerRez has it now', async () => {
    const context = await setup();
    const { tokens } = await signIn(context);
    context.fake.user = { ...context.fake.user, firstName: 'Renamed' };
    expect(await context.provider.fetchIdentity?.(tokens)).toEqual({
      subject: String(context.fake.user.id),
      email: context.fake.user.email,
      name: `Renamed ${context.fake.user.lastName}`,
    });
  });

  it('revoke DELETEs the token, after which fetchIdentity says terminal (reconnect)', async () => {
    const context = await setup();
    const { tokens } = await signIn(context);
    await context.provider.revoke?.(tokens);
    expect(context.fake.calls.revoke).toBe(1);
    const error = await failure(context.provider.fetchIdentity?.(tokens) ?? never(), context.fake);
    expectGrantError(error, 'terminal');
    expect(error.message).toMatch(/reconnect/i);
  });

  it('revoking a token OwnerRez no longer knows (404) counts as done', async () => {
    const context = await setup();
    const { tokens } = await signIn(context);
    context.fake.revokeAll();
    await context.provider.revoke?.({ ...tokens, accessToken: 'CANARY-ownerrez-at-unknown' });
    expect(context.fake.calls.revoke).toBe(1);
  });

  it('fetchIdentity says terminal for a token revoked at OwnerRez (401)', async () => {
    const context = await setup();
    const { tokens } = await signIn(context);
    context.fake.revokeToken(tokens.accessToken);
    expectGrantError(await failure(context.provider.fetchIdentity?.(tokens) ?? never(), context.fake), 'terminal');
  });

  it('fetchIdentity treats 403 (IP blocked, account locked) as transient: it does not prove the grant is dead', async () => {
    const context = await setup();
    const { tokens } = await signIn(context);
    context.fake.failNext('usersMe', 'forbidden');
    expectGrantError(await failure(context.provider.fetchIdentity?.(tokens) ?? never(), context.fake), 'transient');
  });

  it('the fake answers 403 to an API call without a User-Agent, like OwnerRez', async () => {
    const { fake } = await setup();
    const status = await new Promise<number | undefined>((resolve, reject) => {
      // node:http sends no User-Agent unless told to (fetch would add its own).
      httpRequest(`${fake.url}/v2/users/me`, { headers: { authorization: 'Bearer x' } }, (response) => {
        response.resume();
        resolve(response.statusCode);
      })
        .on('error', reject)
        .end();
    });
    expect(status).toBe(403);
    expect(fake.userAgents).toEqual(['']);
  });

  for (const mode of ['down', 'slow', '500', 'garbage'] as const) {
    it(`fetchIdentity treats /v2/users/me that is ${mode} as transient`, async () => {
      const context = await setup();
      const { tokens } = await signIn(context);
      context.fake.failNext('usersMe', mode);
      expectGrantError(await failure(context.provider.fetchIdentity?.(tokens) ?? never(), context.fake), 'transient');
    });
  }

  for (const mode of ['down', 'slow', '500', 'invalid_grant'] as const) {
    it(`revoke treats an endpoint that is ${mode} as transient`, async () => {
      const context = await setup();
      const { tokens } = await signIn(context);
      context.fake.failNext('revoke', mode);
      expectGrantError(await failure(context.provider.revoke?.(tokens) ?? never(), context.fake), 'transient');
    });
  }
});

describe('OwnerRez token and user responses are validated strictly', () => {
  const now = 1_700_000_000_000;
  const valid = { access_token: 'CANARY-ownerrez-at-x', token_type: 'bearer', user_id: 7 };

  it('accepts bearer in any case, null for optional fields, and a numeric or digit-string user_id', () => {
    expect(readTokenResponse({ ...valid, token_type: 'Bearer', expires_in: null }, now)).toEqual({
      tokens: { accessToken: valid.access_token, expiresAt: undefined, scope: undefined },
      userId: '7',
    });
    expect(readTokenResponse({ ...valid, user_id: '7', expires_in: 60 }, now).tokens.expiresAt).toBe(1_700_000_060);
    expect(readTokenResponse({ ...valid, user_id: null }, now).userId).toBeUndefined();
  });

  for (const [what, body] of [
    ['a non-object', ['access_token']],
    ['a missing access_token', { ...valid, access_token: undefined }],
    ['an empty access_token', { ...valid, access_token: '' }],
    ['a non-bearer token_type', { ...valid, token_type: 'mac' }],
    ['a missing token_type', { ...valid, token_type: undefined }],
    ['a zero expires_in', { ...valid, expires_in: 0 }],
    ['a string expires_in', { ...valid, expires_in: '3600' }],
    ['a malformed user_id', { ...valid, user_id: 'abc' }],
  ] as const) {
    it(`rejects a token response with ${what} as transient`, () => {
      expect(() => readTokenResponse(body, now)).toThrow(UpstreamGrantError);
    });
  }

  it('rejects a user without a usable id, and leaves absent email and name undefined', () => {
    expect(() => readUser({ email_address: 'a@example.com' })).toThrow(UpstreamGrantError);
    expect(() => readUser({ id: 0 })).toThrow(UpstreamGrantError);
    expect(readUser({ id: 12, first_name: '  ', last_name: null })).toEqual({ subject: '12', email: undefined, name: undefined });
  });
});

function never(): never {
  throw new Error('unreachable');
}
