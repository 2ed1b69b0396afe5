import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOidc, type FakeUser, startFakeOidc } from '../support/fake-oidc.ts';
import { type FakeOwnerRez, startFakeOwnerRez } from '../support/fake-ownerrez.ts';
import {
  approveWithUpstream,
  changeProfileUpstream,
  connectThroughUpstream,
  connectThroughUpstreamWithFetch,
  ENTRA_CLIENT,
  federationEnv,
  GOOGLE_CLIENT,
  OWNERREZ_CLIENT,
  type RecordedResponse,
  recordingFetch,
} from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { TestOAuthClient } from '../support/mcp-client.ts';
import { authorizationRequest, LOOPBACK_REDIRECT, registerClient } from '../support/oauth.ts';
import { UserAgent } from '../support/user-agent.ts';

interface Whoami {
  account: string;
  provider: string;
  identities: { provider: string; email: string | null; name: string | null; status: string; live: boolean }[];
}

/** Calls `whoami` and returns its structured answer, failing with the tool's own text if it errs. */
async function whoami(client: Client): Promise<Whoami & { text: string }> {
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  const text = (result.content as { type: string; text?: string }[]).map((part) => part.text ?? '').join('\n');
  expect(result.isError, text).toBeFalsy();
  return { ...(result.structuredContent as unknown as Whoami), text };
}

/** Rows in the account tables, read from the database file as another process would. */
function countAccounts(databasePath: string): { accounts: number; upstreamAccounts: number } {
  const db = new Database(databasePath, { readonly: true, fileMustExist: true });
  try {
    const count = (table: string) => (db.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
    return { accounts: count('accounts'), upstreamAccounts: count('upstream_accounts') };
  } finally {
    db.close();
  }
}

/** Every byte SQLite has written: the main file and the write-ahead log. */
const databaseBytes = (path: string): string =>
  [path, `${path}-wal`]
    .filter(existsSync)
    .map((file) => readFileSync(file).toString('latin1'))
    .join('');

/**
 * A browser that keeps every response Gatehouse sent it (pages and redirects). Its cookies for the
 * IdPs can go while Gatehouse's stay, as when the user signs out at Google to sign in as another of
 * their Google accounts (the fakes all live on 127.0.0.1, so they share one cookie jar).
 */
class RecordingUserAgent extends UserAgent {
  readonly responses: RecordedResponse[] = [];
  private upstream = new UserAgent();
  private readonly origin: string;
  constructor(origin: string) {
    super();
    this.origin = origin;
  }
  override async request(url: string, init: RequestInit = {}): Promise<Response> {
    if (!url.startsWith(this.origin)) return this.upstream.request(url, init);
    const response = await super.request(url, init);
    this.responses.push({
      request: `${init.method ?? 'GET'} ${url}`,
      status: response.status,
      headers: [...response.headers].map(([name, value]) => `${name}: ${value}`).join('\n'),
      body: await response.clone().text(),
    });
    return response;
  }
  signOutUpstream(): void {
    this.upstream = new UserAgent();
  }
}

/** An MCP client that remembers every authorization URL the SDK built (the helpers clear the last one). */
class WatchedOAuthClient extends TestOAuthClient {
  readonly requested: URL[] = [];
  override redirectToAuthorization(url: URL): void {
    this.requested.push(url);
    super.redirectToAuthorization(url);
  }
}

/** A fresh browser's sign-in for a new client that ends on a Gatehouse page instead of at the client. */
async function refusedSignIn(gatehouse: TestGatehouse, provider: string): Promise<{ url: URL; status: number; page: string }> {
  const client = await registerClient(gatehouse.url);
  const request = authorizationRequest(gatehouse.url, { clientId: client.client_id });
  const { url, response } = await approveWithUpstream(new UserAgent(), gatehouse.url, request.url, provider, LOOPBACK_REDIRECT);
  return { url, status: response.status, page: await response.text() };
}

let serial = 0;
/** A person nobody else in this file is, so accounts never collide between tests. */
const person = (label: string) => {
  serial += 1;
  return { email: `${label}-${serial}@example.com`, name: `${label[0]?.toUpperCase()}${label.slice(1)} Number${serial}` };
};
/** A UUID-shaped id (Entra `tid`/`oid`), distinct per call. */
const uuid = (digit: string) => {
  serial += 1;
  const tail = String(serial).padStart(12, '0');
  return `${digit.repeat(8)}-${digit.repeat(4)}-4${digit.repeat(3)}-8${digit.repeat(3)}-${tail}`;
};
/** OwnerRez keeps first and last name apart; whoami shows them joined by a space. */
const ownerRezUser = (who: { email: string; name: string }, id: string) => {
  const [firstName = '', ...rest] = who.name.split(' ');
  return { id: Number(id), email: who.email, firstName, lastName: rest.join(' ') };
};
const FAKE_TENANT = '11111111-1111-4111-8111-111111111111';
const ENTRA_SCOPES = ['openid', 'profile', 'email', 'offline_access', 'User.Read', 'Calendars.Read'];

describe('MCP client through federated login to Entra ID, Google and OwnerRez', () => {
  let entra: FakeOidc;
  let google: FakeOidc;
  let ownerrez: FakeOwnerRez;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    [entra, google, ownerrez] = await Promise.all([
      startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret, tenantId: FAKE_TENANT }),
      startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret }),
      startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret }),
    ]);
    gatehouse = await startGatehouse(federationEnv({ entra, google, ownerrez }));
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([entra?.close(), google?.close(), ownerrez?.close()]);
  });

  /** Per provider: who signs in next, how the profile changes upstream, and the fake's identity-endpoint counter. */
  const upstreams = {
    entra: {
      endpoint: 'userinfo',
      signInAs: (who: { email: string; name: string }, oid: string) => {
        entra.user = { ...who, oid };
      },
      changeTo: (who: { email: string; name: string }, oid: string) => changeProfileUpstream(entra, ENTRA_CLIENT.id, { ...who, oid }),
      lookups: () => entra.calls.userinfo,
    },
    google: {
      endpoint: 'userinfo',
      signInAs: (who: { email: string; name: string }, sub: string) => {
        google.user = { ...who, sub };
      },
      changeTo: (who: { email: string; name: string }, sub: string) => changeProfileUpstream(google, GOOGLE_CLIENT.id, { ...who, sub }),
      lookups: () => google.calls.userinfo,
    },
    ownerrez: {
      endpoint: '/v2/users/me',
      signInAs: (who: { email: string; name: string }, id: string) => {
        ownerrez.user = ownerRezUser(who, id);
      },
      // OwnerRez: assigning a user with a known id is that user's profile changing at OwnerRez.
      changeTo: async (who: { email: string; name: string }, id: string) => {
        ownerrez.user = ownerRezUser(who, id);
      },
      lookups: () => ownerrez.calls.usersMe,
    },
  };

  for (const [provider, upstream] of Object.entries(upstreams)) {
    it(`signs in through ${provider} (consent, upstream, callback, token) and whoami reads the identity live from the upstream ${upstream.endpoint}`, async () => {
      const upstreamId = provider === 'entra' ? uuid('a') : String(50_000 + serial++);
      const before = person(provider);
      upstream.signInAs(before, upstreamId);
      const { client } = await connectThroughUpstream(gatehouse.url, provider);

      const lookupsAtLogin = upstream.lookups();
      const first = await whoami(client);
      expect(first).toMatchObject({ provider, identities: [{ provider, ...before, status: 'ok', live: true }] });
      expect(first.identities).toHaveLength(1);
      expect(first.text).toContain(before.email);
      expect(upstream.lookups()).toBe(lookupsAtLogin + 1);

      // The user changes name and email at the IdP; Gatehouse is not told, and whoami still follows.
      const after = { email: `renamed-${before.email}`, name: `Renamed ${before.name}` };
      await upstream.changeTo(after, upstreamId);
      const lookupsBefore = upstream.lookups();
      const second = await whoami(client);
      expect(second).toMatchObject({ account: first.account, provider, identities: [{ provider, ...after, status: 'ok', live: true }] });
      expect(upstream.lookups()).toBe(lookupsBefore + 1);
      await client.close();
    });
  }

  describe('Entra ID', () => {
    it("asks Entra for exactly openid profile email offline_access and the Graph scopes the tools need (User.Read Calendars.Read), with PKCE S256, state and nonce, and never forwards the MCP client's resource or scope", async () => {
      entra.user = { ...person('scoped'), oid: uuid('b') };
      const oauth = new WatchedOAuthClient();
      const { client } = await connectThroughUpstream(gatehouse.url, 'entra', { oauth });
      await client.close();

      // The MCP client did ask Gatehouse for a resource (RFC 8707) and a scope of its own.
      const asked = oauth.requested[0]?.searchParams;
      expect(asked?.get('resource')).toBe(`${gatehouse.url}/mcp`);
      // The 401 challenge names every scope of this deployment; the SDK asks for all of them.
      const askedScopes = (asked?.get('scope') ?? '').split(' ');
      expect(askedScopes).toEqual(expect.arrayContaining(['mcp', 'microsoft', 'google.calendar', 'ownerrez']));

      const sent = entra.lastAuthorizationParams;
      expect(sent?.has('resource')).toBe(false);
      const scopes = (sent?.get('scope') ?? '').split(' ');
      expect([...scopes].sort()).toEqual([...ENTRA_SCOPES].sort());
      for (const ours of askedScopes) expect(scopes).not.toContain(ours);
      expect(sent?.get('client_id')).toBe(ENTRA_CLIENT.id);
      expect(sent?.get('response_type')).toBe('code');
      expect(sent?.get('redirect_uri')).toBe(`${gatehouse.url}/upstream/entra/callback`);
      expect(sent?.get('code_challenge_method')).toBe('S256');
      expect(sent?.get('code_challenge')).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(sent?.get('state')).toMatch(/^[A-Za-z0-9_-]{22,}$/);
      expect(sent?.get('nonce')).toMatch(/^[A-Za-z0-9_-]{22,}$/);
      // Gatehouse's own PKCE and state upstream, not the MCP client's passed through.
      expect(sent?.get('code_challenge')).not.toBe(asked?.get('code_challenge'));
      expect(sent?.get('state')).not.toBe(asked?.get('state'));
    });

    it('redeems the Entra code with client_secret_post (no Authorization header) and the PKCE verifier of its challenge', async () => {
      entra.user = { ...person('secretpost'), oid: uuid('b') };
      const { client } = await connectThroughUpstream(gatehouse.url, 'entra');
      await client.close();

      const token = entra.lastTokenRequest;
      expect(token?.authorization).toBeUndefined();
      expect(token?.params.get('grant_type')).toBe('authorization_code');
      expect(token?.params.get('client_id')).toBe(ENTRA_CLIENT.id);
      // The secret's + / = % arrive as they are, which Basic auth's form-encoding would have changed.
      expect(token?.params.get('client_secret')).toBe(ENTRA_CLIENT.secret);
      expect(token?.params.get('redirect_uri')).toBe(`${gatehouse.url}/upstream/entra/callback`);
      const verifier = token?.params.get('code_verifier') ?? '';
      expect(createHash('sha256').update(verifier).digest('base64url')).toBe(entra.lastAuthorizationParams?.get('code_challenge'));
    });

    it('admits only its own tenant when ENTRA_TENANT_ID names one: a user of another tenant gets a page and no account', async () => {
      const rows = countAccounts(gatehouse.databasePath);
      entra.user = { ...person('guest'), tid: uuid('c'), oid: uuid('c') };
      const { url, status, page } = await refusedSignIn(gatehouse, 'entra');
      expect(url.pathname).toBe('/upstream/entra/callback');
      expect(status).toBe(400);
      expect(page).toContain('Sign-in could not continue');
      expect(page).toContain('Start again');
      expect(countAccounts(gatehouse.databasePath)).toEqual(rows);
    });

    it('keys Entra users by tid and oid: the same email with another oid is another account, a new email with the same oid the same one', async () => {
      const shared = person('namesake');
      const [oidA, oidB] = [uuid('d'), uuid('d')];
      const signIn = async (user: FakeUser) => {
        entra.user = user;
        const { client } = await connectThroughUpstream(gatehouse.url, 'entra');
        const answer = await whoami(client);
        await client.close();
        return answer;
      };
      const rows = countAccounts(gatehouse.databasePath);
      const first = await signIn({ ...shared, oid: oidA });
      const namesake = await signIn({ ...shared, oid: oidB });
      expect(namesake.account).not.toBe(first.account);
      expect(namesake.identities[0]?.email).toBe(shared.email);

      const renamed = await signIn({ ...person('renamed'), oid: oidA });
      expect(renamed.account).toBe(first.account);
      expect(countAccounts(gatehouse.databasePath)).toEqual({ accounts: rows.accounts + 2, upstreamAccounts: rows.upstreamAccounts + 2 });
    });

    describe('multi-tenant (ENTRA_ALLOWED_TENANTS)', () => {
      const tenantB = uuid('e');
      let multi: TestGatehouse;
      beforeAll(async () => {
        multi = await startGatehouse(federationEnv({ entra }, { entraAllowedTenants: [FAKE_TENANT, tenantB] }));
      });
      afterAll(async () => multi?.close());

      it("signs in users of every allowed tenant, each checked against its own tenant's issuer", async () => {
        const home = person('home');
        entra.user = { ...home, oid: uuid('f') };
        const first = await connectThroughUpstream(multi.url, 'entra');
        expect(await whoami(first.client)).toMatchObject({ provider: 'entra', identities: [{ ...home, live: true }] });
        await first.client.close();

        const guest = person('tenantb');
        entra.user = { ...guest, tid: tenantB, oid: uuid('f') };
        const second = await connectThroughUpstream(multi.url, 'entra');
        expect(await whoami(second.client)).toMatchObject({ provider: 'entra', identities: [{ ...guest, live: true }] });
        await second.client.close();
      });

      it('refuses a user whose tid is not on the allow-list with a clear 400 page, and writes no account row', async () => {
        const rows = countAccounts(multi.databasePath);
        entra.user = { ...person('outsider'), tid: uuid('9'), oid: uuid('9') };
        const { url, status, page } = await refusedSignIn(multi, 'entra');
        expect(url.pathname).toBe('/upstream/entra/callback');
        expect(status).toBe(400);
        expect(page).toContain('Your Microsoft organisation is not allowed to use this Gatehouse.');
        expect(page).toContain('Start again');
        expect(countAccounts(multi.databasePath)).toEqual(rows);
      });

      it('keys users by tid and oid: the same oid in another tenant is another account', async () => {
        const oid = uuid('7');
        entra.user = { ...person('twin'), oid };
        const home = await connectThroughUpstream(multi.url, 'entra');
        entra.user = { ...person('twin'), tid: tenantB, oid };
        const away = await connectThroughUpstream(multi.url, 'entra');
        expect((await whoami(away.client)).account).not.toBe((await whoami(home.client)).account);
        await Promise.all([home.client.close(), away.client.close()]);
      });
    });
  });

  describe('Google', () => {
    it('asks Google for a refresh token with access_type=offline and prompt=consent, with PKCE S256, state and nonce, and no resource', async () => {
      google.user = person('offline');
      const oauth = new WatchedOAuthClient();
      const { client } = await connectThroughUpstream(gatehouse.url, 'google', { oauth });
      await client.close();

      const sent = google.lastAuthorizationParams;
      expect(sent?.get('access_type')).toBe('offline');
      expect(sent?.get('prompt')).toBe('consent');
      expect((sent?.get('scope') ?? '').split(' ').sort()).toEqual([
        'email',
        'https://www.googleapis.com/auth/calendar.readonly',
        'openid',
        'profile',
      ]);
      expect(sent?.get('code_challenge_method')).toBe('S256');
      expect(sent?.get('state')).toBeTruthy();
      expect(sent?.get('nonce')).toBeTruthy();
      expect(sent?.has('resource')).toBe(false);
      expect(sent?.get('state')).not.toBe(oauth.requested[0]?.searchParams.get('state'));
      // Without a domain allow-list there is no hd hint.
      expect(sent?.has('hd')).toBe(false);
    });

    describe('Workspace domain allow-list (GOOGLE_ALLOWED_DOMAINS)', () => {
      let domains: TestGatehouse;
      beforeAll(async () => {
        domains = await startGatehouse({ ...federationEnv({ google }), GOOGLE_ALLOWED_DOMAINS: 'example.org' });
      });
      afterAll(async () => domains?.close());

      it('signs in a Workspace user whose hd is an allowed domain, preselecting that domain with hd', async () => {
        const member = { email: `member-${serial++}@example.org`, name: 'Member Person' };
        google.user = { ...member, hd: 'example.org' };
        const { client } = await connectThroughUpstream(domains.url, 'google');
        expect(await whoami(client)).toMatchObject({ provider: 'google', identities: [{ ...member, live: true }] });
        await client.close();
        expect(google.lastAuthorizationParams?.get('hd')).toBe('example.org');
      });

      for (const [what, hd] of [
        ['a user of another Workspace domain', 'other.org'],
        ['a consumer account without hd', undefined],
      ] as const) {
        it(`refuses ${what} with a clear 400 page, and writes no account row`, async () => {
          const rows = countAccounts(domains.databasePath);
          google.user = { ...person('outside'), ...(hd ? { hd } : {}) };
          const { url, status, page } = await refusedSignIn(domains, 'google');
          expect(url.pathname).toBe('/upstream/google/callback');
          expect(status).toBe(400);
          expect(page).toContain('This Gatehouse accepts only Google Workspace accounts of allowed domains.');
          expect(page).toContain('Start again');
          expect(countAccounts(domains.databasePath)).toEqual(rows);
        });
      }
    });
  });

  describe('OwnerRez', () => {
    it('authenticates to OwnerRez with HTTP Basic of the raw client id and secret, and names Gatehouse in the User-Agent of every call', async () => {
      const callsBefore = ownerrez.userAgents.length;
      upstreams.ownerrez.signInAs(person('basic'), String(60_000 + serial++));
      const { client } = await connectThroughUpstream(gatehouse.url, 'ownerrez');
      await whoami(client);
      await client.close();

      const authorization = ownerrez.lastTokenRequest?.authorization ?? '';
      expect(authorization).toBe(`Basic ${Buffer.from(`${OWNERREZ_CLIENT.id}:${OWNERREZ_CLIENT.secret}`).toString('base64')}`);
      // Percent-encoding first (RFC 6749 §2.3.1) would have changed these credentials.
      expect(encodeURIComponent(OWNERREZ_CLIENT.id)).not.toBe(OWNERREZ_CLIENT.id);
      expect(encodeURIComponent(OWNERREZ_CLIENT.secret)).not.toBe(OWNERREZ_CLIENT.secret);
      expect(ownerrez.lastTokenRequest?.form.client_secret).toBeUndefined();

      // Token exchange and /v2/users/me at sign-in, /v2/users/me again for whoami.
      const agents = ownerrez.userAgents.slice(callsBefore);
      expect(agents.length).toBeGreaterThanOrEqual(3);
      for (const agent of agents) expect(agent).toMatch(/^Gatehouse\//);
    });
  });

  describe('accounts', () => {
    it('never merges accounts by email: the same email at Google and at OwnerRez in two browsers is two accounts', async () => {
      const shared = person('shared');
      const rows = countAccounts(gatehouse.databasePath);
      google.user = { ...shared, sub: String(10n ** 20n + BigInt(serial++)) };
      const atGoogle = await connectThroughUpstream(gatehouse.url, 'google');
      upstreams.ownerrez.signInAs(shared, String(70_000 + serial++));
      const atOwnerRez = await connectThroughUpstream(gatehouse.url, 'ownerrez');

      const [viaGoogle, viaOwnerRez] = [await whoami(atGoogle.client), await whoami(atOwnerRez.client)];
      expect(viaGoogle.account).not.toBe(viaOwnerRez.account);
      expect(viaGoogle.identities).toMatchObject([{ provider: 'google', email: shared.email }]);
      expect(viaOwnerRez.identities).toMatchObject([{ provider: 'ownerrez', email: shared.email }]);
      expect(countAccounts(gatehouse.databasePath)).toEqual({ accounts: rows.accounts + 2, upstreamAccounts: rows.upstreamAccounts + 2 });
      await Promise.all([atGoogle.client.close(), atOwnerRez.client.close()]);
    });

    it('links more upstream accounts while signed in: two Google and two OwnerRez accounts on one Gatehouse account, all listed by whoami', async () => {
      const rows = countAccounts(gatehouse.databasePath);
      const agent = new RecordingUserAgent(gatehouse.url);
      const people = [person('linkgoogle'), person('linkgoogle'), person('linkownerrez'), person('linkownerrez')] as const;
      const clients: Client[] = [];
      for (const [index, who] of people.entries()) {
        const provider = index < 2 ? 'google' : 'ownerrez';
        if (provider === 'google') google.user = { ...who, sub: String(2n * 10n ** 20n + BigInt(serial++)) };
        else upstreams.ownerrez.signInAs(who, String(80_000 + serial++));
        agent.signOutUpstream();
        // Each MCP client is new (its own DCR), so the consent page shows, in the same browser.
        const { client } = await connectThroughUpstream(gatehouse.url, provider, { agent, oauth: new TestOAuthClient() });
        clients.push(client);
      }
      // Once signed in, the consent page offered the current account besides the providers.
      const consentPages = agent.responses.filter((response) => response.status === 200 && /\/interaction\/[^/]+$/.test(response.request));
      expect(consentPages).toHaveLength(4);
      for (const page of consentPages.slice(1)) expect(page.body).toContain('Continue with your current account');

      const answers = await Promise.all(clients.map((client) => whoami(client)));
      expect(new Set(answers.map((answer) => answer.account)).size).toBe(1);
      expect(answers[0]?.identities).toEqual([
        { provider: 'google', ...people[0], status: 'ok', live: true },
        { provider: 'google', ...people[1], status: 'ok', live: true },
        { provider: 'ownerrez', ...people[2], status: 'ok', live: true },
        { provider: 'ownerrez', ...people[3], status: 'ok', live: true },
      ]);
      expect(countAccounts(gatehouse.databasePath)).toEqual({ accounts: rows.accounts + 1, upstreamAccounts: rows.upstreamAccounts + 4 });
      await Promise.all(clients.map((client) => client.close()));
    });

    it("never shows one user another's identity: 50 interleaved whoami calls from two users at once each name their own caller", async () => {
      const users = [person('alice'), person('bob')] as const;
      const sessions: Awaited<ReturnType<typeof connectThroughUpstream>>[] = [];
      for (const user of users) {
        google.user = { ...user, sub: String(3n * 10n ** 20n + BigInt(serial++)) };
        sessions.push(await connectThroughUpstream(gatehouse.url, 'google'));
      }
      const accounts = await Promise.all(sessions.map(async ({ client }) => (await whoami(client)).account));
      expect(accounts[0]).not.toBe(accounts[1]);

      const lookupsBefore = google.calls.userinfo;
      const answers = await Promise.all(
        Array.from({ length: 50 }, async (_, call) => ({ caller: call % 2, answer: await whoami(sessions[call % 2]?.client as Client) })),
      );
      for (const { caller, answer } of answers) {
        const own = users[caller] as { email: string; name: string };
        const other = users[1 - caller] as { email: string; name: string };
        expect(answer.account).toBe(accounts[caller]);
        expect(answer.identities).toEqual([{ provider: 'google', ...own, status: 'ok', live: true }]);
        expect(answer.text).toContain(own.email);
        expect(answer.text).not.toContain(other.email);
      }
      // Every answer was read live upstream, each with its own caller's token.
      expect(google.calls.userinfo).toBe(lookupsBefore + 50);
      await Promise.all(sessions.map(({ client }) => client.close()));
    });
  });
});

describe('upstream tokens (canaries) never leave the vault', () => {
  let entra: FakeOidc;
  let google: FakeOidc;
  let ownerrez: FakeOwnerRez;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    // Google's tokens expire within the five-minute margin, so every whoami refreshes them first.
    // Entra's do not: its fake refuses the refresh scopes real Entra accepts (offline_access, User.Read).
    [entra, google, ownerrez] = await Promise.all([
      startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret }),
      startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret, accessTokenTtl: 120 }),
      startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret, expiresIn: 3600 }),
    ]);
    gatehouse = await startGatehouse(federationEnv({ entra, google, ownerrez }));
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([entra?.close(), google?.close(), ownerrez?.close()]);
  });

  it('keeps every upstream access and refresh token out of HTTP responses to the MCP client and the browser, the database file and the logs', async () => {
    const recorder = recordingFetch();
    const browsers: RecordingUserAgent[] = [];
    const emails: string[] = [];
    for (const provider of ['entra', 'google', 'ownerrez']) {
      // A browser per user: each provider's login makes an account of its own.
      const agent = new RecordingUserAgent(gatehouse.url);
      browsers.push(agent);
      const { client } = await connectThroughUpstreamWithFetch(gatehouse.url, provider, recorder.fetch, { agent });
      // Two calls: Google's grant refreshes before each.
      await whoami(client);
      emails.push(...(await whoami(client)).identities.map((identity) => String(identity.email)));
      await client.close();
    }
    expect(google.calls.token.refresh_token).toBe(2);
    await recorder.settled();

    const canaries = [...entra.issuedTokens(), ...google.issuedTokens(), ...ownerrez.issuedTokens()];
    // Entra and Google: an access and a refresh token at sign-in; Google another access token per refresh; OwnerRez one.
    expect(canaries.length).toBeGreaterThanOrEqual(7);
    const toClient = recorder.responses.map(
      (response) => `${response.request}\n${response.status}\n${response.headers}\n\n${response.body}`,
    );
    const toBrowser = browsers
      .flatMap((browser) => browser.responses)
      .map((response) => `${response.request}\n${response.status}\n${response.headers}\n\n${response.body}`);
    const places = {
      'responses to the MCP client': toClient.join('\n'),
      'responses to the browser': toBrowser.join('\n'),
      'the database file': databaseBytes(gatehouse.databasePath),
      'the logs': gatehouse.logs.join('\n'),
    };
    // The recordings hold what they should, so a missing canary means something.
    expect(places['responses to the MCP client']).toContain('"access_token"');
    for (const email of emails) expect(places['responses to the MCP client']).toContain(email);
    expect(places['responses to the browser']).toContain('/upstream/');
    expect(places['the database file']).toContain(emails[0]);
    expect(places['the logs']).toContain('/upstream/google/callback');

    for (const [place, text] of Object.entries(places)) {
      for (const canary of canaries) expect(text.includes(canary), `${canary.slice(0, 20)}… in ${place}`).toBe(false);
      expect(text, place).not.toContain('CANARY-');
    }
  });
});
