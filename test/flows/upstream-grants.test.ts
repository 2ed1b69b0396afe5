import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import { type FakeOwnerRez, startFakeOwnerRez } from '../support/fake-ownerrez.ts';
import {
  connectThroughUpstream,
  ENTRA_CLIENT,
  federationEnv,
  finishAuthorization,
  GOOGLE_CLIENT,
  OWNERREZ_CLIENT,
  rawMcpCall,
} from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { TestOAuthClient } from '../support/mcp-client.ts';
import { tokenRequest } from '../support/oauth.ts';
import { type GatehouseProcess, startGatehouseProcess } from '../support/second-process.ts';

/** Inside the 300 s refresh window: every use of a token this young refreshes it first. */
const EXPIRING_TTL = 120;
/** How long the fakes hold the one refresh a single-flight test lets through, so every parallel call arrives while it runs. */
const HELD_REFRESH_MS = 2000;
const WHOAMI = { name: 'whoami', arguments: {} };

/** A client's OAuthClientProvider as real clients write it: on `invalid_grant` the SDK drops the tokens and starts over. */
class ReconnectingOAuthClient extends TestOAuthClient {
  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery') {
    if (scope === 'all' || scope === 'tokens') this.savedTokens = undefined;
    if (scope === 'all' || scope === 'client') this.clientInfo = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = '';
  }
}

type Connected = Awaited<ReturnType<typeof connectThroughUpstream>>;
type ToolResult = { isError?: boolean; content?: { type: string; text?: string }[]; structuredContent?: unknown };
type RawReply = { status: number; headers: Headers; body: { result?: ToolResult } };
type UpstreamRow = { id: string; account_id: string; status: string; sealed_tokens: string; version: number };

/** Origins whose responses are kept for the canary check: every Gatehouse the tests talk to. */
const gatehouseOrigins = new Set<string>();
const responseBodies: Promise<string>[] = [];
const realFetch = globalThis.fetch;

/** Keeps a copy of every body a Gatehouse sends to these tests (SDK client, browser, raw calls); SSE streams never end, so not those. */
const recordingFetch = (async (input: string | URL | Request, init?: RequestInit) => {
  const response = await realFetch(input, init);
  const { origin } = new URL(input instanceof Request ? input.url : input);
  if (gatehouseOrigins.has(origin) && !response.headers.get('content-type')?.includes('text/event-stream')) {
    responseBodies.push(
      response
        .clone()
        .text()
        .catch(() => ''),
    );
  }
  return response;
}) as typeof fetch;

/** A JSON-RPC request on the SDK client's own MCP session, sent raw so the test sees the HTTP status and headers. */
function rawCall(origin: string, connected: Connected, method: string, params: object = {}): Promise<RawReply> {
  return rawMcpCall<RawReply['body']>(origin, connected, method, params);
}

const rawWhoami = (origin: string, connected: Connected) => rawCall(origin, connected, 'tools/call', WHOAMI);
const textOf = (result: ToolResult | undefined): string => (result?.content ?? []).map((part) => part.text ?? '').join(' ');

/** The upstream account row of the user signed in as `email` (a test user's email is unique to it). */
function upstreamRow(gatehouse: TestGatehouse, email: string): UpstreamRow {
  const db = new Database(gatehouse.databasePath, { readonly: true, fileMustExist: true });
  try {
    const row = db
      .prepare<[string], UpstreamRow>('SELECT id, account_id, status, sealed_tokens, version FROM upstream_accounts WHERE email = ?')
      .get(email);
    if (!row) throw new Error(`no upstream account for ${email}`);
    return row;
  } finally {
    db.close();
  }
}

/**
 * Changes one character in the middle of the sealed payload (every bit of a middle base64url character
 * is significant, unlike the last one's). The write waits out the app's group-commit batch without
 * blocking: a busy_timeout would hold this event loop, the one the app needs to commit.
 */
async function tamperSealedTokens(gatehouse: TestGatehouse, id: string): Promise<void> {
  const db = new Database(gatehouse.databasePath, { fileMustExist: true, timeout: 0 });
  try {
    const row = db.prepare<[string], { sealed: string }>('SELECT sealed_tokens AS sealed FROM upstream_accounts WHERE id = ?').get(id);
    if (!row) throw new Error(`no upstream account ${id}`);
    const { sealed } = row;
    const payloadStart = sealed.lastIndexOf('.') + 1;
    const at = payloadStart + Math.floor((sealed.length - payloadStart) / 2);
    const tampered = `${sealed.slice(0, at)}${sealed[at] === 'A' ? 'B' : 'A'}${sealed.slice(at + 1)}`;
    const update = db.prepare('UPDATE upstream_accounts SET sealed_tokens = ? WHERE id = ?');
    for (let attempt = 0; ; attempt++) {
      try {
        update.run(tampered, id);
        return;
      } catch (error) {
        if ((error as { code?: string }).code !== 'SQLITE_BUSY' || attempt >= 200) throw error;
        await sleep(10);
      }
    }
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

/** What a dead grant must leave behind: a 401 with the bearer challenge, the row dead, and our tokens for it gone. */
async function expectDeadGrant(gatehouse: TestGatehouse, connected: Connected, email: string, reply: RawReply): Promise<void> {
  expect(reply.status).toBe(401);
  expect(reply.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token".*resource_metadata="/);
  expect(reply.body.result?.isError).toBe(true);
  expect(textOf(reply.body.result)).toMatch(/reconnect/i);
  expect(upstreamRow(gatehouse, email).status).toBe('dead');
  // revokeAccountAccess: the access token is refused at the gate, the refresh token at /token.
  expect((await rawCall(gatehouse.url, connected, 'tools/list')).status).toBe(401);
  const refresh = await tokenRequest(gatehouse.url, {
    grant_type: 'refresh_token',
    refresh_token: connected.oauth.savedTokens?.refresh_token as string,
    client_id: connected.oauth.clientInfo?.client_id as string,
  });
  expect(refresh).toMatchObject({ status: 400, body: { error: 'invalid_grant' } });
}

describe('upstream grants behind MCP tool calls', () => {
  const secrets = { ENCRYPTION_KEY: randomBytes(32).toString('base64'), COOKIE_SECRET: randomBytes(32).toString('base64url') };
  // Single-flight: Entra (rotates refresh tokens) and Google (does not), each holding its one refresh open a moment.
  let entra: FakeOidc;
  let google: FakeOidc;
  let refreshing: TestGatehouse;
  // Failures: Google with the default 15 s "slow" (past the 10 s upstream timeout), OwnerRez with 30-day tokens.
  let failingGoogle: FakeOidc;
  let ownerrez: FakeOwnerRez;
  let failing: TestGatehouse;
  // OwnerRez whose tokens expire a second after they are issued.
  let shortOwnerRez: FakeOwnerRez;
  let expiring: TestGatehouse;
  let secondProcessOutput = '';

  beforeAll(async () => {
    globalThis.fetch = recordingFetch;
    const oidc = { accessTokenTtl: EXPIRING_TTL };
    [entra, google, failingGoogle, ownerrez, shortOwnerRez] = await Promise.all([
      startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret, ...oidc, slowMs: HELD_REFRESH_MS }),
      startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret, ...oidc, slowMs: HELD_REFRESH_MS }),
      startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret, ...oidc }),
      startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret, expiresIn: 30 * 24 * 3600 }),
      startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret, expiresIn: 1 }),
    ]);
    refreshing = await startGatehouse({ ...federationEnv({ entra, google }), ...secrets });
    failing = await startGatehouse(federationEnv({ google: failingGoogle, ownerrez }));
    expiring = await startGatehouse(federationEnv({ ownerrez: shortOwnerRez }));
    for (const gatehouse of [refreshing, failing, expiring]) gatehouseOrigins.add(gatehouse.url);
  });

  afterAll(async () => {
    globalThis.fetch = realFetch;
    await Promise.all([refreshing?.close(), failing?.close(), expiring?.close()]);
    await Promise.all([entra, google, failingGoogle, ownerrez, shortOwnerRez].map((fake) => fake?.close()));
  });

  describe('just-in-time refresh is single-flight', () => {
    for (const [provider, fake, email] of [
      ['entra', () => entra, 'ada.entra@example.com'],
      ['google', () => google, 'ada.google@example.com'],
    ] as const) {
      it(`refreshes an expiring ${provider} token once for 20 parallel tool calls, and stores what the refresh returned`, async () => {
        fake().user = { email, name: `Ada via ${provider}` };
        const { client } = await connectThroughUpstream(refreshing.url, provider, { oauth: new ReconnectingOAuthClient() });
        const before = fake().calls.token.refresh_token;
        const version = upstreamRow(refreshing, email).version;
        fake().failNext('token', 'slow'); // the one refresh is held open until every call has asked for tokens

        const results = await Promise.all(Array.from({ length: 20 }, () => client.callTool(WHOAMI)));

        expect(fake().calls.token.refresh_token - before).toBe(1);
        for (const result of results) {
          expect(result.isError).toBeFalsy();
          expect(result.structuredContent).toMatchObject({ provider, identities: [{ provider, email, status: 'ok', live: true }] });
        }
        expect(upstreamRow(refreshing, email)).toMatchObject({ status: 'ok', version: version + 1 });

        // The new access token is again inside the window, so the next call refreshes with what the first refresh
        // stored: Entra's rotated refresh token (the fake kills the grant when a replaced one comes back), and for
        // Google, whose response carries none, the one from the login.
        const usedFirst = fake().lastTokenRequest?.params.get('refresh_token');
        const next = await client.callTool(WHOAMI);
        expect(next.isError).toBeFalsy();
        expect(next.structuredContent).toMatchObject({ identities: [{ email, status: 'ok', live: true }] });
        expect(fake().calls.token.refresh_token - before).toBe(2);
        const usedNext = fake().lastTokenRequest?.params.get('refresh_token');
        if (provider === 'entra') expect(usedNext).not.toBe(usedFirst);
        else expect(usedNext).toBe(usedFirst);
        expect(fake().issuedTokens()).toContain(usedNext);
        await client.close();
      });
    }

    it('refreshes once when two Gatehouse processes on one database serve 20 parallel tool calls with the same token', async () => {
      const email = 'grace@example.com';
      entra.user = { email, name: 'Grace Hopper' };
      const atA = await connectThroughUpstream(refreshing.url, 'entra', { oauth: new ReconnectingOAuthClient() });
      let processB: GatehouseProcess | undefined;
      try {
        processB = await startGatehouseProcess({
          NODE_ENV: 'test',
          LOG_LEVEL: 'debug',
          ...federationEnv({ entra, google }),
          ...secrets,
          DATABASE_PATH: refreshing.databasePath,
          // The issuer and the tokens' audience are A's: both processes are one Gatehouse.
          PUBLIC_URL: refreshing.url,
        });
        gatehouseOrigins.add(processB.url);
        // MCP sessions live in one process; the bearer token is the same.
        const atB = new Client({ name: 'flow-test-b', version: '1.0.0' });
        await atB.connect(new StreamableHTTPClientTransport(new URL('/mcp', processB.url), { authProvider: atA.oauth }));

        const before = entra.calls.token.refresh_token;
        const version = upstreamRow(refreshing, email).version;
        entra.failNext('token', 'slow'); // a second, racing refresh would replay Entra's rotated token
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? atA.client : atB).callTool(WHOAMI)));

        expect(entra.calls.token.refresh_token - before).toBe(1);
        for (const result of results) {
          expect(result.isError).toBeFalsy();
          expect(result.structuredContent).toMatchObject({ identities: [{ provider: 'entra', email, status: 'ok', live: true }] });
        }
        expect(upstreamRow(refreshing, email)).toMatchObject({ status: 'ok', version: version + 1 });
        await atB.close();
      } finally {
        await processB?.stop();
        secondProcessOutput = processB?.output() ?? '';
      }
      await atA.client.close();
    });
  });

  describe('a refused grant is terminal', () => {
    it('answers 401 after invalid_grant upstream, marks the grant dead, revokes our tokens, and works again once the client re-authorizes', async () => {
      const email = 'revoked@example.com';
      failingGoogle.user = { email, name: 'Revoked User' };
      const connected = await connectThroughUpstream(failing.url, 'google', { oauth: new ReconnectingOAuthClient() });
      const { id } = upstreamRow(failing, email);
      failingGoogle.revokeAllGrants(); // the user removed the app's access at Google

      await expectDeadGrant(failing, connected, email, await rawWhoami(failing.url, connected));

      // The real SDK client: 401 → its refresh is refused → it asks for a new authorization.
      const { client, transport, oauth, agent } = connected;
      await expect(client.callTool(WHOAMI)).rejects.toBeInstanceOf(UnauthorizedError);
      expect(oauth.authorizationUrl).toBeDefined();
      await finishAuthorization(transport, oauth, agent, failing.url, 'google');
      const again = await client.callTool(WHOAMI);
      expect(again.isError).toBeFalsy();
      expect(again.structuredContent).toMatchObject({ identities: [{ provider: 'google', email, status: 'ok', live: true }] });
      expect(upstreamRow(failing, email)).toMatchObject({ id, status: 'ok' });
      await client.close();
    });
  });

  describe('a transient failure changes nothing', () => {
    /** 503 + Retry-After, a retryable message, and the row exactly as it was. */
    async function expectUnchangedAfterOutage(connected: Connected, email: string, before: UpstreamRow): Promise<void> {
      const reply = await rawWhoami(failing.url, connected);
      expect(reply.status).toBe(503);
      const retryAfter = reply.headers.get('retry-after');
      expect(retryAfter).toMatch(/^[1-9][0-9]*$/);
      expect(reply.body.result?.isError).toBe(true);
      expect(textOf(reply.body.result)).toContain(`Try again in ${retryAfter} seconds`);
      expect(upstreamRow(failing, email)).toEqual(before);
      expect((await rawCall(failing.url, connected, 'tools/list')).status).toBe(200);
    }

    /** Our refresh token still works (and the client keeps the rotated one), then the next call refreshes upstream. */
    async function expectRecovery(connected: Connected, email: string, fake: FakeOidc, refreshesBefore: number, failed: number) {
      const { oauth, client } = connected;
      const refreshed = await tokenRequest(failing.url, {
        grant_type: 'refresh_token',
        refresh_token: oauth.savedTokens?.refresh_token as string,
        client_id: oauth.clientInfo?.client_id as string,
      });
      expect(refreshed.status).toBe(200);
      oauth.saveTokens({ ...oauth.savedTokens, ...(refreshed.body as unknown as OAuthTokens) });
      const result = await client.callTool(WHOAMI);
      expect(result.isError).toBeFalsy();
      expect(result.structuredContent).toMatchObject({ identities: [{ email, status: 'ok', live: true }] });
      expect(fake.calls.token.refresh_token - refreshesBefore).toBe(failed + 1);
    }

    it('answers 503 with Retry-After when the token endpoint fails with a 500 or drops the connection, and keeps the grant', async () => {
      const email = 'outage@example.com';
      failingGoogle.user = { email, name: 'Outage User' };
      const connected = await connectThroughUpstream(failing.url, 'google', { oauth: new ReconnectingOAuthClient() });
      const before = upstreamRow(failing, email);
      const refreshes = failingGoogle.calls.token.refresh_token;
      for (const mode of ['500', 'down'] as const) {
        failingGoogle.failNext('token', mode);
        await expectUnchangedAfterOutage(connected, email, before);
      }
      await expectRecovery(connected, email, failingGoogle, refreshes, 2);
      expect(upstreamRow(failing, email)).toMatchObject({ status: 'ok', version: before.version + 1 });
      await connected.client.close();
    });

    it('answers 503 with Retry-After when the token endpoint does not answer within the upstream timeout, and keeps the grant', async () => {
      const email = 'slow@example.com';
      failingGoogle.user = { email, name: 'Slow User' };
      const connected = await connectThroughUpstream(failing.url, 'google', { oauth: new ReconnectingOAuthClient() });
      const before = upstreamRow(failing, email);
      const refreshes = failingGoogle.calls.token.refresh_token;
      failingGoogle.failNext('token', 'slow');
      await expectUnchangedAfterOutage(connected, email, before);
      await expectRecovery(connected, email, failingGoogle, refreshes, 1);
      await connected.client.close();
    });
  });

  describe('OwnerRez has no refresh grant', () => {
    it('answers 401 and marks the grant dead once the token has expired, without asking OwnerRez for a refresh', async () => {
      const email = shortOwnerRez.user.email;
      const connected = await connectThroughUpstream(expiring.url, 'ownerrez', { oauth: new ReconnectingOAuthClient() });
      const tokenCalls = shortOwnerRez.calls.token;
      await sleep(1100); // expires_in is 1 s: the token is past its expiry, at OwnerRez and in Gatehouse

      await expectDeadGrant(expiring, connected, email, await rawWhoami(expiring.url, connected));
      expect(shortOwnerRez.calls.token).toBe(tokenCalls);
      await connected.client.close();
    });

    it('answers 401 and marks the grant dead when OwnerRez rejects a revoked token that has not expired', async () => {
      const email = 'revoked.host@example.com';
      ownerrez.user = { id: 2002, email, firstName: 'Rita', lastName: 'Revoked' };
      const connected = await connectThroughUpstream(failing.url, 'ownerrez', { oauth: new ReconnectingOAuthClient() });
      ownerrez.revokeAll();
      const usersMe = ownerrez.calls.usersMe;
      const tokenCalls = ownerrez.calls.token;

      await expectDeadGrant(failing, connected, email, await rawWhoami(failing.url, connected));
      // One /v2/users/me answered 401; the one recovery there is (a refresh) does not exist, so no retry either.
      expect(ownerrez.calls.usersMe - usersMe).toBe(1);
      expect(ownerrez.calls.token).toBe(tokenCalls);
      await connected.client.close();
    });
  });

  describe('the vault', () => {
    it('treats a tampered sealed grant as dead: 401, the row dead, no 500 and the server still up', async () => {
      const email = 'tampered.host@example.com';
      ownerrez.user = { id: 2003, email, firstName: 'Tom', lastName: 'Tampered' };
      const connected = await connectThroughUpstream(failing.url, 'ownerrez', { oauth: new ReconnectingOAuthClient() });
      const row = upstreamRow(failing, email);
      await tamperSealedTokens(failing, row.id);
      expect(upstreamRow(failing, email).sealed_tokens).not.toBe(row.sealed_tokens);
      const usersMe = ownerrez.calls.usersMe;

      await expectDeadGrant(failing, connected, email, await rawWhoami(failing.url, connected));
      expect(ownerrez.calls.usersMe).toBe(usersMe);
      const health = await fetch(`${failing.url}/healthz`);
      expect(health.status).toBe(200);
      await health.body?.cancel();
      await connected.client.close();
    });
  });

  it('never lets an upstream token (a canary) into a database file, a log line or a response these tests received', async () => {
    const canaries = [entra, google, failingGoogle, ownerrez, shortOwnerRez].flatMap((fake) => fake.issuedTokens());
    expect(canaries.length).toBeGreaterThan(20);
    for (const canary of canaries) expect(canary).toMatch(/^CANARY-/);
    const bodies = await Promise.all(responseBodies);
    expect(bodies.length).toBeGreaterThan(100);
    expect(bodies.join('\n')).toContain('"live":true');
    expect(secondProcessOutput).toContain('Gatehouse is serving');
    const places: Record<string, string> = {
      'the responses to the client': bodies.join('\n'),
      'the second process log': secondProcessOutput,
    };
    for (const [name, gatehouse] of Object.entries({ refreshing, failing, expiring })) {
      places[`the ${name} database`] = databaseBytes(gatehouse.databasePath);
      places[`the ${name} log`] = gatehouse.logs.join('\n');
    }
    // Every canary starts with the prefix, so one search per place covers them all.
    for (const [place, text] of Object.entries(places)) {
      expect(text.length, place).toBeGreaterThan(0);
      expect(text.includes('CANARY-'), `a canary in ${place}`).toBe(false);
    }
  });
});
