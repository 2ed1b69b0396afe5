import { createHash, randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import { type FakeOwnerRez, startFakeOwnerRez } from '../support/fake-ownerrez.ts';
import { ENTRA_CLIENT, federationEnv, GOOGLE_CLIENT, OWNERREZ_CLIENT, stopAtUpstreamCallback } from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { type AuthorizationRequest, authorizationRequest, LOOPBACK_REDIRECT, registerClient, tokenRequest } from '../support/oauth.ts';
import { formAction, hiddenField, UserAgent } from '../support/user-agent.ts';

// The upstream callback attacks of issue 3: each ends on an error page (400 for the user's or an
// attacker's doing, 502 for an upstream outage), never another 5xx, never a half-created account,
// never a token, code or state in the page or the logs.

const ANOTHER_TENANT = '22222222-2222-4222-8222-222222222222';
const OUTAGE = 'could not be reached or gave an answer Gatehouse did not understand';
const LABELS: Record<string, string> = { entra: 'Microsoft', google: 'Google', ownerrez: 'OwnerRez' };

let entra: FakeOidc;
let google: FakeOidc;
let ownerrez: FakeOwnerRez;
let gatehouse: TestGatehouse;
const clients = new Map<TestGatehouse, string>();

beforeAll(async () => {
  entra = await startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret });
  // Just past Gatehouse's 10 s upstream timeout; only one test makes Google slow.
  google = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret, slowMs: 11_000 });
  ownerrez = await startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret });
  gatehouse = await startGatehouse(federationEnv({ entra, google, ownerrez }));
});
afterAll(async () => {
  await gatehouse?.close();
  await Promise.all([entra?.close(), google?.close(), ownerrez?.close()]);
});

interface Rows {
  accounts: number;
  upstreamAccounts: number;
}

/** Row counts that a refused callback must leave as they were (no half-created account). */
function rows(on: TestGatehouse): Rows {
  const db = new Database(on.databasePath, { readonly: true, fileMustExist: true });
  try {
    const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    return { accounts: count('accounts'), upstreamAccounts: count('upstream_accounts') };
  } finally {
    db.close();
  }
}

interface Login {
  on: TestGatehouse;
  agent: UserAgent;
  request: AuthorizationRequest;
  /** The upstream's redirect back to `/upstream/<provider>/callback?code=…&state=…`, not yet delivered. */
  callback: URL;
  /** Rows before the callback is delivered. */
  before: Rows;
}

/** A client's authorization request, approved on the consent page with `provider`, stopped at the upstream's redirect back. */
async function startLogin(provider: string, options: { on?: TestGatehouse; agent?: UserAgent } = {}): Promise<Login> {
  const on = options.on ?? gatehouse;
  const agent = options.agent ?? new UserAgent();
  let clientId = clients.get(on);
  if (!clientId) {
    clientId = (await registerClient(on.url, { client_name: 'Callback Test Client' })).client_id;
    clients.set(on, clientId);
  }
  const request = authorizationRequest(on.url, { clientId });
  const callback = await stopAtUpstreamCallback(agent, on.url, request.url, provider);
  expect(callback.pathname).toBe(`/upstream/${provider}/callback`);
  return { on, agent, request, callback, before: rows(on) };
}

/** The browser delivers a (possibly altered) callback URL; the response is not followed. */
const deliver = (login: Login, url: URL = login.callback, agent: UserAgent = login.agent): Promise<Response> => agent.request(url.href);

/** The callback URL with its query replaced, on `provider`'s callback path (default: the same one). */
function altered(login: Login, query: Record<string, string>, provider?: string): URL {
  const url = new URL(provider ? `/upstream/${provider}/callback` : login.callback.pathname, login.on.url);
  url.search = new URLSearchParams(query).toString();
  return url;
}

const stateOf = (login: Login): string => login.callback.searchParams.get('state') ?? '';
const codeOf = (login: Login): string => login.callback.searchParams.get('code') ?? '';

/** No upstream token, no code and no state of `login` in the page or anywhere in the logs. */
function expectNothingLeaked(login: Login, html: string): void {
  const secrets = [...entra.issuedTokens(), ...google.issuedTokens(), ...ownerrez.issuedTokens(), codeOf(login), stateOf(login)];
  const logs = login.on.logs.join('');
  expect(secrets.filter((secret) => secret && html.includes(secret))).toEqual([]);
  expect(secrets.filter((secret) => secret && logs.includes(secret))).toEqual([]);
  expect(`${html}\n${logs}`).not.toContain('CANARY-');
}

/**
 * Checks the error page a refused callback ends on: status, HTML, the message, a "Start again" link
 * to the client's own authorization request (only when the callback resolved to this browser's
 * interaction), no leak, and no account written. Returns the page and the link.
 */
async function expectRefusal(
  login: Login,
  response: Response,
  expected: { status: 400 | 502; says: string; startAgain: boolean },
): Promise<{ html: string; startAgain: URL | undefined }> {
  const html = await response.text();
  expect(response.status, html).toBe(expected.status);
  expect(response.headers.get('content-type')).toMatch(/^text\/html/);
  expect(html).toContain('<h1>Sign-in could not continue</h1>');
  expect(html).toContain(expected.says);
  const href = /<a class="button button-primary" href="([^"]*)">Start again<\/a>/.exec(html)?.[1];
  const startAgain = href === undefined ? undefined : new URL(href.replaceAll('&amp;', '&'), login.on.url);
  if (expected.startAgain) {
    expect(startAgain?.pathname).toBe('/authorize');
    expect(Object.fromEntries(startAgain?.searchParams ?? [])).toMatchObject({
      client_id: clients.get(login.on),
      redirect_uri: LOOPBACK_REDIRECT,
      state: login.request.state,
    });
  } else {
    expect(startAgain).toBeUndefined();
    expect(html).toContain('You can close this window and try again from the app you were connecting.');
  }
  expectNothingLeaked(login, html);
  expect(rows(login.on)).toEqual(login.before);
  return { html, startAgain };
}

/** A successful callback: it resumes the authorization, which ends at the client's redirect URI with a code. */
async function expectSignedIn(response: Response, login: Login): Promise<void> {
  expect(response.status).toBe(303);
  const resume = new URL(response.headers.get('location') ?? '', login.on.url);
  expect(resume.pathname).toMatch(/^\/authorize\//);
  const landed = await login.agent.followUntil(resume.href, (url) => url.startsWith(LOOPBACK_REDIRECT));
  const redirect = new URL(landed.url);
  expect(`${redirect.origin}${redirect.pathname}`).toBe(LOOPBACK_REDIRECT);
  expect(redirect.searchParams.get('code')).toBeTruthy();
  expect(redirect.searchParams.get('state')).toBe(login.request.state);
}

describe('the upstream callback accepts only a state it issued, once, in time, to this browser', () => {
  it('refuses an unknown state, and a missing or oversized one, without burning the real state', async () => {
    const login = await startLogin('google');
    const unknown = altered(login, { code: codeOf(login), state: randomBytes(32).toString('base64url') });
    await expectRefusal(login, await deliver(login, unknown), {
      status: 400,
      says: 'This sign-in link is unknown or was already used.',
      startAgain: false,
    });
    const incomplete: Record<string, string>[] = [{ code: codeOf(login) }, { code: codeOf(login), state: 'x'.repeat(513) }];
    for (const query of incomplete) {
      await expectRefusal(login, await deliver(login, altered(login, query)), {
        status: 400,
        says: 'This sign-in link is incomplete.',
        startAgain: false,
      });
    }
    await expectSignedIn(await deliver(login), login);
  });

  it('accepts a state once: a callback replayed after a successful sign-in is refused (single-use)', async () => {
    const login = await startLogin('entra');
    await expectSignedIn(await deliver(login), login);
    const exchanges = entra.calls.token.authorization_code;
    login.before = rows(gatehouse);
    await expectRefusal(login, await deliver(login), {
      status: 400,
      says: 'This sign-in link is unknown or was already used.',
      startAgain: false,
    });
    expect(entra.calls.token.authorization_code).toBe(exchanges);
  });

  it('refuses a second delivery of the same code, even at the same moment: one signs in, the other is refused', async () => {
    ownerrez.user = { id: 4242, email: 'twice@example.com', firstName: 'Tw', lastName: 'Ice' };
    const login = await startLogin('ownerrez');
    const exchanges = ownerrez.calls.token;
    const responses = await Promise.all([deliver(login), deliver(login)]);
    const [signedIn, refused] = responses[0]?.status === 303 ? responses : [...responses].reverse();
    await expectSignedIn(signedIn as Response, login);
    // The winner created exactly this one account; the refused delivery wrote nothing.
    login.before = { accounts: login.before.accounts + 1, upstreamAccounts: login.before.upstreamAccounts + 1 };
    await expectRefusal(login, refused as Response, {
      status: 400,
      says: 'This sign-in link is unknown or was already used.',
      startAgain: false,
    });
    expect(ownerrez.calls.token).toBe(exchanges + 1);
  });

  it('refuses a state past its ten-minute expiry, offering to start again', async () => {
    const login = await startLogin('entra');
    const writable = new Database(login.on.databasePath, { fileMustExist: true });
    try {
      writable.pragma('busy_timeout = 5000');
      const stateHash = createHash('sha256').update(stateOf(login)).digest('base64url');
      const updated = writable.prepare('UPDATE upstream_logins SET expires_at = ? WHERE state_hash = ?').run(Date.now() - 1000, stateHash);
      expect(updated.changes).toBe(1);
    } finally {
      writable.close();
    }
    const exchanges = entra.calls.token.authorization_code;
    await expectRefusal(login, await deliver(login), {
      status: 400,
      says: 'This sign-in took too long and expired.',
      startAgain: true,
    });
    expect(entra.calls.token.authorization_code).toBe(exchanges);
  });

  it('refuses a callback delivered in another browser, with no binding cookie or with its own', async () => {
    const exchanges = ownerrez.calls.token;
    const fresh = await startLogin('ownerrez');
    await expectRefusal(fresh, await deliver(fresh, fresh.callback, new UserAgent()), {
      status: 400,
      says: 'This sign-in was started in a different browser.',
      startAgain: false,
    });
    const victim = await startLogin('ownerrez');
    const attacker = await startLogin('ownerrez');
    expect(attacker.agent.cookieEntries().some(([name]) => name === 'gatehouse_browser')).toBe(true);
    await expectRefusal(victim, await deliver(victim, victim.callback, attacker.agent), {
      status: 400,
      says: 'This sign-in was started in a different browser.',
      startAgain: false,
    });
    // The code never reached OwnerRez: a callback URL replayed elsewhere is worthless.
    expect(ownerrez.calls.token).toBe(exchanges);
  });

  it('refuses a forged browser cookie: the id without its signature, a wrong signature, garbage', async () => {
    const forgeries = [
      (signed: string) => signed.split('.')[0] ?? '',
      (signed: string) => `${signed.split('.')[0]}.${'A'.repeat(43)}`,
      () => 'garbage',
    ];
    for (const forge of forgeries) {
      const login = await startLogin('google');
      const signed = login.agent.cookieEntries().find(([name]) => name === 'gatehouse_browser')?.[1];
      expect(signed).toMatch(/\./);
      const response = await fetch(login.callback, {
        headers: { cookie: `gatehouse_browser=${forge(signed ?? '')}` },
        redirect: 'manual',
      });
      await expectRefusal(login, response, {
        status: 400,
        says: 'This sign-in was started in a different browser.',
        startAgain: false,
      });
    }
    // The same delivery with the genuine cookie signs in: only the forgery was refused.
    const genuine = await startLogin('google');
    const cookie = genuine.agent.cookieEntries().find(([name]) => name === 'gatehouse_browser')?.[1];
    await expectSignedIn(
      await fetch(genuine.callback, { headers: { cookie: `gatehouse_browser=${cookie}` }, redirect: 'manual' }),
      genuine,
    );
  });
});

describe('the upstream callback shows what the upstream said, and only that', () => {
  for (const provider of ['entra', 'google', 'ownerrez']) {
    it(`shows ${LABELS[provider]}'s error=access_denied with the provider's label and the code, nothing more`, async () => {
      const login = await startLogin(provider);
      const response = await deliver(
        login,
        altered(login, {
          error: 'access_denied',
          error_description: 'AADSTS65004 DESCRIPTION-MUST-NOT-SHOW',
          error_uri: 'https://evil.example/ERROR-URI-MUST-NOT-SHOW',
          state: stateOf(login),
        }),
      );
      const { html } = await expectRefusal(login, response, {
        status: 400,
        says: `${LABELS[provider]} did not sign you in (access_denied).`,
        startAgain: true,
      });
      expect(html).not.toContain('DESCRIPTION-MUST-NOT-SHOW');
      expect(html).not.toContain('ERROR-URI-MUST-NOT-SHOW');
    });
  }

  it('escapes an upstream error and cuts it to 64 characters', async () => {
    const script = await startLogin('ownerrez');
    const { html } = await expectRefusal(
      script,
      await deliver(script, altered(script, { error: '<script>alert(1)</script>', state: stateOf(script) })),
      { status: 400, says: 'OwnerRez did not sign you in (&lt;script&gt;alert(1)&lt;/script&gt;).', startAgain: true },
    );
    expect(html).not.toContain('<script');

    const long = await startLogin('google');
    const error = `${'x'.repeat(64)}-TAIL-MUST-NOT-SHOW-${'z'.repeat(4000)}`;
    const page = await expectRefusal(long, await deliver(long, altered(long, { error, state: stateOf(long) })), {
      status: 400,
      says: `Google did not sign you in (${'x'.repeat(64)}).`,
      startAgain: true,
    });
    expect(page.html).not.toContain('x'.repeat(65));
    expect(page.html).not.toContain('TAIL-MUST-NOT-SHOW');
  });

  it('offers a start-again link that leads back to the consent page and on to a normal sign-in', async () => {
    const login = await startLogin('google');
    google.failNext('token', '500');
    const { startAgain } = await expectRefusal(login, await deliver(login), { status: 502, says: OUTAGE, startAgain: true });

    const consent = await login.agent.follow(String(startAgain), gatehouse.url);
    expect(consent.response.status).toBe(200);
    expect(consent.url).toMatch(/\/interaction\//);
    const html = await consent.response.text();
    expect(html).toContain('Callback Test Client');
    const atClient = (url: string) => url.startsWith(LOOPBACK_REDIRECT);
    const landed = await login.agent.followUntil(new URL(formAction(html, 'name="provider"'), gatehouse.url).href, atClient, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ _csrf: hiddenField(html, '_csrf'), provider: 'google' }).toString(),
    });
    const redirect = new URL(landed.url);
    expect(redirect.searchParams.get('state')).toBe(login.request.state);
    // The restarted request is the client's original one, PKCE challenge included: its verifier redeems the code.
    const { status, body } = await tokenRequest(gatehouse.url, {
      grant_type: 'authorization_code',
      code: redirect.searchParams.get('code') ?? '',
      code_verifier: login.request.verifier,
      redirect_uri: LOOPBACK_REDIRECT,
      client_id: clients.get(gatehouse) ?? '',
      resource: gatehouse.config.resourceUrl,
    });
    expect(status).toBe(200);
    expect(body.access_token).toBeTruthy();
  });
});

describe('the upstream callback refuses a mix-up between providers (RFC 9700 §4.4)', () => {
  for (const [from, to, fake] of [
    ['google', 'entra', () => entra.calls.token.authorization_code],
    ['ownerrez', 'google', () => google.calls.token.authorization_code],
  ] as const) {
    it(`refuses a state from the ${LABELS[from]} login arriving at ${LABELS[to]}'s callback, without sending the code there`, async () => {
      const login = await startLogin(from);
      const exchanges = fake();
      await expectRefusal(login, await deliver(login, altered(login, Object.fromEntries(login.callback.searchParams), to)), {
        status: 400,
        says: 'This sign-in came back from a different identity provider than the one it was sent to.',
        startAgain: false,
      });
      expect(fake()).toBe(exchanges);
    });
  }
});

describe('the upstream callback checks the ID token (OpenID Connect Core §3.1.3.7)', () => {
  const tampered = [
    ['entra', 'a wrong issuer', { iss: 'https://login.microsoftonline.com/00000000-0000-4000-8000-000000000000/v2.0' }],
    ['entra', 'a wrong audience', { aud: 'another-app' }],
    ['entra', 'a wrong nonce', { nonce: 'a-nonce-from-another-login' }],
    ['google', 'a wrong issuer', { iss: 'https://accounts.evil.example' }],
    ['google', 'a wrong audience', { aud: 'another-app.apps.googleusercontent.com' }],
    ['google', 'a wrong nonce', { nonce: 'a-nonce-from-another-login' }],
  ] as const;
  for (const [provider, what, claims] of tampered) {
    it(`refuses ${LABELS[provider]}'s ID token with ${what}`, async () => {
      const login = await startLogin(provider);
      (provider === 'entra' ? entra : google).tamperNextIdToken(claims);
      await expectRefusal(login, await deliver(login), {
        status: 400,
        says: `The sign-in response from ${LABELS[provider]} failed its security checks.`,
        startAgain: true,
      });
    });
  }

  it('refuses a user of another tenant when Entra is single-tenant (a guest signed in by that tenant’s issuer)', async () => {
    const home = entra.user;
    entra.user = { email: 'guest@other.example', name: 'Guest', tid: ANOTHER_TENANT };
    try {
      const login = await startLogin('entra');
      await expectRefusal(login, await deliver(login), {
        status: 400,
        says: 'The sign-in response from Microsoft failed its security checks.',
        startAgain: true,
      });
    } finally {
      entra.user = home;
    }
  });

  it('refuses an Entra ID token whose tid is not the configured tenant, even from the right issuer', async () => {
    const login = await startLogin('entra');
    entra.tamperNextIdToken({ tid: ANOTHER_TENANT });
    await expectRefusal(login, await deliver(login), {
      status: 400,
      says: 'Your Microsoft organisation is not allowed to use this Gatehouse.',
      startAgain: true,
    });
  });

  it('refuses a tenant outside ENTRA_ALLOWED_TENANTS when Entra is multi-tenant', async () => {
    const multiTenant = await startGatehouse(federationEnv({ entra }, { entraAllowedTenants: [ANOTHER_TENANT] }));
    try {
      const login = await startLogin('entra', { on: multiTenant });
      await expectRefusal(login, await deliver(login), {
        status: 400,
        says: 'Your Microsoft organisation is not allowed to use this Gatehouse.',
        startAgain: true,
      });
    } finally {
      await multiTenant.close();
    }
  });
});

describe('the upstream callback turns an upstream outage into a 502 page', () => {
  for (const mode of ['down', '500', 'garbage'] as const) {
    it(`answers 502 when Google's token endpoint is ${mode}`, async () => {
      const login = await startLogin('google');
      google.failNext('token', mode);
      await expectRefusal(login, await deliver(login), { status: 502, says: OUTAGE, startAgain: true });
    });

    it(`answers 502 when OwnerRez's token endpoint is ${mode}`, async () => {
      const login = await startLogin('ownerrez');
      ownerrez.failNext('token', mode);
      await expectRefusal(login, await deliver(login), { status: 502, says: OUTAGE, startAgain: true });
    });
  }

  it("answers 502 within the 10 s upstream timeout when Google's token endpoint is slower", async () => {
    const login = await startLogin('google');
    google.failNext('token', 'slow');
    const started = Date.now();
    const response = await deliver(login);
    const elapsed = Date.now() - started;
    await expectRefusal(login, response, { status: 502, says: OUTAGE, startAgain: true });
    expect(elapsed).toBeGreaterThanOrEqual(9_500);
    expect(elapsed).toBeLessThan(11_000);
  });

  for (const mode of ['500', 'down'] as const) {
    it(`answers 502 and keeps no account when OwnerRez's /v2/users/me is ${mode} during sign-in`, async () => {
      const login = await startLogin('ownerrez');
      const issued = ownerrez.issuedTokens().length;
      ownerrez.failNext('usersMe', mode);
      await expectRefusal(login, await deliver(login), { status: 502, says: OUTAGE, startAgain: true });
      // OwnerRez did hand out a token; Gatehouse kept neither it nor an account.
      expect(ownerrez.issuedTokens().length).toBe(issued + 1);
    });
  }

  it('answers 400, not 502, when the upstream refuses the code itself (invalid_grant)', async () => {
    const fromGoogle = await startLogin('google');
    google.failNext('token', 'invalid_grant');
    await expectRefusal(fromGoogle, await deliver(fromGoogle), {
      status: 400,
      says: 'Google refused the sign-in (invalid_grant).',
      startAgain: true,
    });
    const fromOwnerRez = await startLogin('ownerrez');
    ownerrez.failNext('token', 'invalid_grant');
    await expectRefusal(fromOwnerRez, await deliver(fromOwnerRez), {
      status: 400,
      says: 'OwnerRez refused the sign-in code. Start again.',
      startAgain: true,
    });
  });
});
