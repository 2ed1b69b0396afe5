import { existsSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { USER_AGENT } from '../../src/upstream/http.ts';
import {
  type FakeOwnerRez,
  type FakeOwnerRezBooking,
  type FakeOwnerRezProperty,
  type FakeOwnerRezUser,
  startFakeOwnerRez,
} from '../support/fake-ownerrez.ts';
import { connectThroughUpstream, federationEnv, finishAuthorization, OWNERREZ_CLIENT, rawMcpCall } from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { TestOAuthClient } from '../support/mcp-client.ts';
import { registerClient } from '../support/oauth.ts';
import { UserAgent } from '../support/user-agent.ts';

type Connected = Awaited<ReturnType<typeof connectThroughUpstream>>;
type ToolResult = { isError?: boolean; content?: { type: string; text?: string }[]; structuredContent?: Record<string, unknown> };
type RawReply = { status: number; headers: Headers; body: { result?: ToolResult; error?: unknown } };
type Booking = { account: string; account_email: string | null; id: number; guest_name: string | null; [field: string]: unknown };
type Property = { account: string; id: number; name: string | null; location: string | null; [field: string]: unknown };

/** The fake serves at most two items a page, so every list read here spans pages (followed by offset). */
const PAGE = 2;

/** What the MCP clients here ask for: the base scope and the OwnerRez tool family (`oauth/scopes.ts`). */
const SCOPE = 'mcp ownerrez';

/**
 * An MCP client configured for the OwnerRez tools: registered for them up front (the SDK would register
 * and ask for the 401 challenge's base scope only, then have to step up) and asking for them. On
 * `invalid_grant` the SDK drops its tokens and starts over, as real clients do.
 */
class OwnerRezOAuthClient extends TestOAuthClient {
  override redirectToAuthorization(url: URL): void {
    url.searchParams.set('scope', SCOPE);
    super.redirectToAuthorization(url);
  }
  invalidateCredentials(scope: 'all' | 'client' | 'tokens' | 'verifier' | 'discovery') {
    if (scope === 'all' || scope === 'tokens') this.savedTokens = undefined;
    if (scope === 'all' || scope === 'client') this.clientInfo = undefined;
    if (scope === 'all' || scope === 'verifier') this.verifier = '';
  }
}

/** Every body Gatehouse sent these tests (SDK client, browser, raw calls), for the canary and personal-data greps. */
const responseBodies: Promise<string>[] = [];
const realFetch = globalThis.fetch;
let gatehouseOrigin = '';
const recordingFetch = (async (input: string | URL | Request, init?: RequestInit) => {
  const response = await realFetch(input, init);
  const { origin } = new URL(input instanceof Request ? input.url : input);
  // SSE streams (the SDK's GET stream) never end, so not those; tool answers come as JSON.
  if (origin === gatehouseOrigin && !response.headers.get('content-type')?.includes('text/event-stream')) {
    responseBodies.push(
      response
        .clone()
        .text()
        .catch(() => ''),
    );
  }
  return response;
}) as typeof fetch;

/** A JSON-RPC request on the SDK client's own session, sent raw so the test sees the HTTP status and headers. */
function rawCall(connected: Connected, method: string, params: object = {}): Promise<RawReply> {
  return rawMcpCall<RawReply['body']>(gatehouseOrigin, connected, method, params);
}

const textOf = (result: ToolResult | undefined): string => (result?.content ?? []).map((part) => part.text ?? '').join('\n');

/** Calls a tool through the SDK client and returns its structured answer, failing with the tool's own text if it errs. */
async function call<T = Record<string, unknown>>(client: Client, name: string, args: object = {}): Promise<T & { text: string }> {
  const result = (await client.callTool({ name, arguments: args as Record<string, unknown> })) as ToolResult;
  const text = textOf(result);
  expect(result.isError, text).toBeFalsy();
  return { ...(result.structuredContent as T), text };
}

/** Calls a tool expecting it to refuse: returns its message. */
async function refusal(client: Client, name: string, args: object): Promise<string> {
  const result = (await client.callTool({ name, arguments: args as Record<string, unknown> })) as ToolResult;
  expect(result.isError, `${name} ${JSON.stringify(args).slice(0, 200)} should have been refused`).toBe(true);
  return textOf(result);
}

let serial = 0;
/** A host nobody else in this file is, with two properties (one inactive) and four bookings (one past, one a block). */
function host(label: string): { user: FakeOwnerRezUser; properties: FakeOwnerRezProperty[]; bookings: FakeOwnerRezBooking[] } {
  serial += 1;
  const id = 60_000 + serial;
  const [lake, barn] = [id * 10 + 1, id * 10 + 2];
  const guest = (n: number) => ({
    id: id * 100 + n,
    first_name: `${label}guest${n}`,
    last_name: 'Traveller',
    email_addresses: [{ address: `${label}-guest${n}@mail.example`, is_default: true }],
    phones: [{ number: `+1 555 01${serial}${n}`, is_default: true }],
    addresses: [{ street1: `${n} Private Road ${label}`, city: 'Elsewhere' }],
  });
  const money = { currency_code: 'USD', total_amount: 950, total_paid: 500, total_owed: 450, listing_site: 'Airbnb' };
  const secrets = { notes: `gate code ${label}-4711`, door_codes: [{ code: `${label}-4711`, lock_name: 'Front door' }] };
  return {
    user: { id, email: `${label}-${serial}@example.com`, firstName: label, lastName: `Host${serial}` },
    properties: [
      {
        id: lake,
        name: `${label} Lake House`,
        active: true,
        bedrooms: 3,
        bathrooms: 2,
        max_guests: 8,
        address: { street1: `1 Hidden Lane ${label}`, city: 'Austin', state: 'Texas', postal_code: '78701', country: 'US' },
      },
      { id: barn, name: `${label} Old Barn`, active: false, bedrooms: 1 },
    ],
    bookings: [
      {
        id: id * 100 + 1,
        property_id: lake,
        arrival: '2040-07-01',
        departure: '2040-07-05',
        status: 'active',
        type: 'booking',
        updated_utc: '2040-01-10T00:00:00Z',
        adults: 2,
        children: 1,
        pets: 0,
        guest: guest(1),
        ...money,
        ...secrets,
      },
      {
        id: id * 100 + 2,
        property_id: barn,
        arrival: '2040-08-10',
        departure: '2040-08-12',
        status: 'canceled',
        type: 'booking',
        updated_utc: '2040-02-01T00:00:00Z',
        adults: 1,
        guest: guest(2),
        ...money,
      },
      {
        id: id * 100 + 3,
        property_id: lake,
        arrival: '2020-01-01',
        departure: '2020-01-03',
        status: 'active',
        type: 'booking',
        updated_utc: '2019-12-01T00:00:00Z',
        adults: 2,
        guest: guest(3),
        ...money,
      },
      {
        id: id * 100 + 4,
        property_id: lake,
        arrival: '2040-09-01',
        departure: '2040-09-03',
        status: 'active',
        type: 'block',
        is_block: true,
        updated_utc: '2040-01-05T00:00:00Z',
      },
    ],
  };
}
type Host = ReturnType<typeof host>;

/** Every byte SQLite has written: the main file and the write-ahead log. */
const databaseBytes = (path: string): string =>
  [path, `${path}-wal`]
    .filter(existsSync)
    .map((file) => readFileSync(file).toString('latin1'))
    .join('');

describe('OwnerRez tools act upstream as the caller', () => {
  let ownerrez: FakeOwnerRez;
  let gatehouse: TestGatehouse;
  /** Where the fake's next_page_url points in one test: anything arriving here followed an upstream-chosen URL. */
  let elsewhere: Server;
  const elsewhereRequests: string[] = [];

  beforeAll(async () => {
    globalThis.fetch = recordingFetch;
    ownerrez = await startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret, maxPageSize: PAGE });
    gatehouse = await startGatehouse(federationEnv({ ownerrez }));
    gatehouseOrigin = gatehouse.url;
    elsewhere = createServer((req, res) => {
      elsewhereRequests.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"items":[],"next_page_url":null}');
    });
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
  });

  afterAll(async () => {
    globalThis.fetch = realFetch;
    await gatehouse?.close();
    await ownerrez?.close();
    await new Promise((resolve) => elsewhere?.close(resolve));
  });

  /** Seeds the host's OwnerRez account and signs in with it, as a new MCP client (or linked into `agent`'s account). */
  async function signIn(who: Host, agent?: UserAgent): Promise<Connected> {
    ownerrez.setData(who.user.id, { properties: who.properties, bookings: who.bookings });
    ownerrez.user = who.user;
    const oauth = new OwnerRezOAuthClient();
    oauth.saveClientInformation(
      await registerClient(gatehouse.url, {
        client_name: 'OwnerRez tools test',
        scope: SCOPE,
        grant_types: ['authorization_code', 'refresh_token'],
      }),
    );
    return connectThroughUpstream(gatehouse.url, 'ownerrez', { oauth, ...(agent ? { agent } : {}) });
  }

  const tokensOf = (who: Host) => new Set(ownerrez.apiCalls.filter((c) => c.userId === who.user.id).map((c) => c.token));
  const idsOf = (bookings: Booking[]) => bookings.map((booking) => booking.id);
  const bookingId = (who: Host, n: number) => (who.bookings[n - 1] as FakeOwnerRezBooking).id;

  it('lists properties and bookings and reads a booking through the real SDK client, reaching OwnerRez only with the caller’s token and Gatehouse’s User-Agent', async () => {
    const ada = host('ada');
    const { client } = await signIn(ada);
    const seen = ownerrez.apiCalls.length;

    const { tools } = await client.listTools();
    for (const name of ['ownerrez_list_properties', 'ownerrez_list_bookings', 'ownerrez_get_booking']) {
      const tool = tools.find((candidate) => candidate.name === name);
      expect(tool?.description).toMatch(/OwnerRez/);
      expect(tool?.inputSchema).toMatchObject({ type: 'object', additionalProperties: false });
      expect(tool?.annotations).toMatchObject({ readOnlyHint: true });
    }

    const active = await call<{ properties: Property[] }>(client, 'ownerrez_list_properties');
    expect(active.properties).toEqual([
      {
        account: expect.any(String),
        account_email: ada.user.email,
        id: ada.properties[0]?.id,
        name: 'ada Lake House',
        active: true,
        bedrooms: 3,
        bathrooms: 2,
        max_guests: 8,
        location: 'Austin, Texas, US',
      },
    ]);
    expect(active.text).toContain('ada Lake House (Austin, Texas, US)');
    const all = await call<{ properties: Property[] }>(client, 'ownerrez_list_properties', { include_inactive: true });
    expect(all.properties.map((p) => p.name)).toEqual(['ada Lake House', 'ada Old Barn']);

    // No filter: stays ending today or later (the 2020 stay is past), over two pages.
    const upcoming = await call<{ bookings: Booking[] }>(client, 'ownerrez_list_bookings');
    expect(idsOf(upcoming.bookings)).toEqual([bookingId(ada, 1), bookingId(ada, 2), bookingId(ada, 4)]);
    expect(upcoming.bookings[0]).toEqual({
      account: active.properties[0]?.account,
      account_email: ada.user.email,
      id: bookingId(ada, 1),
      property_id: ada.properties[0]?.id,
      status: 'active',
      type: 'booking',
      arrival: '2040-07-01',
      departure: '2040-07-05',
      guest_name: 'adaguest1 Traveller',
      adults: 2,
      children: 1,
      pets: 0,
      channel: 'Airbnb',
      currency: 'USD',
      total_amount: 950,
      total_paid: 500,
      total_owed: 450,
    });
    expect(upcoming.bookings[2]).toMatchObject({ type: 'block', guest_name: null });
    expect(upcoming.text).toContain('adaguest1 Traveller at property');
    expect(upcoming.text).toContain('2040-07-01 → 2040-07-05, active, total 950.00 USD, owed 450.00 USD');

    const one = await call<{ booking: Booking }>(client, 'ownerrez_get_booking', { booking_id: bookingId(ada, 2) });
    expect(one.booking).toMatchObject({ id: bookingId(ada, 2), status: 'canceled', guest_name: 'adaguest2 Traveller' });

    // What OwnerRez saw: the bookings list with the filter it requires and the guest's name asked for.
    const calls = ownerrez.apiCalls.slice(seen);
    const listed = calls.find((c) => c.endpoint === 'bookings')?.url.searchParams;
    expect(listed?.get('since_utc')).toBe('2000-01-01T00:00:00Z');
    expect(listed?.get('from')).toBe(new Date().toISOString().slice(0, 10));
    expect(listed?.get('include_guest')).toBe('true');
    expect(calls.map((c) => c.endpoint)).toEqual(['properties', 'properties', 'bookings', 'bookings', 'booking']);
    for (const seenCall of calls) {
      expect(seenCall).toMatchObject({ userId: ada.user.id, userAgent: USER_AGENT });
      expect(seenCall.token).toMatch(/^CANARY-ownerrez-at-/);
    }
    expect(tokensOf(ada).size).toBe(1);
    await client.close();
  });

  it('honours the filters: property ids (then no since_utc), the stay window, changed_since in UTC, status and limit', async () => {
    const bo = host('bo');
    const { client } = await signIn(bo);
    const [lake, barn] = bo.properties.map((p) => p.id);
    const list = async (args: object) => {
      const seen = ownerrez.apiCalls.length;
      const answer = await call<{ bookings: Booking[] }>(client, 'ownerrez_list_bookings', args);
      return { ids: idsOf(answer.bookings), query: ownerrez.apiCalls[seen]?.url.searchParams, text: answer.text };
    };

    const atLake = await list({ property_ids: [lake], from: '2000-01-01' });
    expect(atLake.ids).toEqual([bookingId(bo, 3), bookingId(bo, 1), bookingId(bo, 4)]);
    expect(atLake.query?.get('property_ids')).toBe(String(lake));
    expect(atLake.query?.has('since_utc')).toBe(false);
    expect((await list({ property_ids: [lake, barn], to: '2030-01-01' })).ids).toEqual([bookingId(bo, 3)]);

    // OwnerRez's window: departing on or after `from`, arriving on or before `to`.
    const window = await list({ from: '2040-07-04', to: '2040-08-10' });
    expect(window.ids).toEqual([bookingId(bo, 1), bookingId(bo, 2)]);
    expect(window.query?.get('from')).toBe('2040-07-04');
    expect(window.query?.get('to')).toBe('2040-08-10');

    expect((await list({ status: 'canceled' })).ids).toEqual([bookingId(bo, 2)]);
    const changed = await list({ changed_since: '2040-01-15T00:00:00+02:00' });
    expect(changed.query?.get('since_utc')).toBe('2040-01-14T22:00:00.000Z');
    expect(changed.query?.has('from')).toBe(false);
    expect(changed.ids).toEqual([bookingId(bo, 2)]);

    const capped = await list({ limit: 1 });
    expect(capped.ids).toHaveLength(1);
    expect(capped.text).toMatch(/More bookings exist in .*narrow the filters or raise limit/);
    await client.close();
  });

  it('pages with offset on OwnerRez’s own origin and never sends the bearer to the next_page_url it was given', async () => {
    const cy = host('cy');
    const { client } = await signIn(cy);
    const address = elsewhere.address();
    ownerrez.nextPageOrigin = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
    try {
      const seen = ownerrez.apiCalls.length;
      const answer = await call<{ bookings: Booking[] }>(client, 'ownerrez_list_bookings', { from: '2000-01-01' });
      expect(idsOf(answer.bookings)).toHaveLength(4);
      const offsets = ownerrez.apiCalls.slice(seen).map((c) => c.url.searchParams.get('offset'));
      expect(offsets).toEqual(['0', '2']);
      expect(elsewhereRequests).toEqual([]);
    } finally {
      ownerrez.nextPageOrigin = ownerrez.url;
    }
    await client.close();
  });

  it('never shows one user another user’s bookings: 40 interleaved calls of two users each answer with the caller’s own', async () => {
    const users = [host('dee'), host('eli')] as const;
    const sessions = [await signIn(users[0]), await signIn(users[1])];
    const answers = await Promise.all(
      Array.from({ length: 40 }, async (_, n) => {
        const caller = n % 2;
        const { client } = sessions[caller] as Connected;
        const own = users[caller] as Host;
        const answer =
          n % 4 < 2
            ? (await call<{ bookings: Booking[] }>(client, 'ownerrez_list_bookings', { from: '2000-01-01' })).bookings
            : [(await call<{ booking: Booking }>(client, 'ownerrez_get_booking', { booking_id: bookingId(own, 1) })).booking];
        return { caller, answer };
      }),
    );
    for (const { caller, answer } of answers) {
      const own = users[caller] as Host;
      const other = users[1 - caller] as Host;
      expect(answer.length).toBeGreaterThan(0);
      for (const booking of answer) {
        expect(own.bookings.map((b) => b.id)).toContain(booking.id);
        expect(booking.account_email).toBe(own.user.email);
        expect(JSON.stringify(booking)).not.toContain(other.user.firstName);
      }
    }
    // Each user's calls carried that user's one token, and no token served two users.
    const [dee, eli] = [tokensOf(users[0]), tokensOf(users[1])];
    expect([dee.size, eli.size]).toEqual([1, 1]);
    expect([...dee].some((token) => eli.has(token))).toBe(false);
    await Promise.all(sessions.map(({ client }) => client.close()));
  });

  it('uses the linked account named by `account` (id or email) and merges `accounts`, each item tagged with its account', async () => {
    const [first, second] = [host('fay'), host('gus')];
    const agent = new UserAgent();
    const a = await signIn(first, agent);
    const b = await signIn(second, agent); // same browser, signed in: the second OwnerRez account is linked
    const { connections } = await call<{ connections: { account: string; provider: string; email: string }[] }>(
      a.client,
      'list_connections',
    );
    expect(connections.map((c) => c.email)).toEqual([first.user.email, second.user.email]);
    const [one, two] = connections.map((c) => c.account) as [string, string];

    const byDefault = await call<{ properties: Property[] }>(a.client, 'ownerrez_list_properties');
    expect(byDefault.properties.map((p) => p.account)).toEqual([one]);
    for (const account of [two, second.user.email.toUpperCase()]) {
      const chosen = await call<{ properties: Property[] }>(b.client, 'ownerrez_list_properties', { account });
      expect(chosen.properties).toMatchObject([{ account: two, account_email: second.user.email, name: 'gus Lake House' }]);
    }

    const merged = await call<{ bookings: Booking[] }>(a.client, 'ownerrez_list_bookings', { accounts: [one, two, one], status: 'active' });
    expect(merged.bookings.map((bk) => [bk.account, bk.id])).toEqual([
      [one, bookingId(first, 1)],
      [two, bookingId(second, 1)],
      [one, bookingId(first, 4)],
      [two, bookingId(second, 4)],
    ]);

    // One account failing leaves the other's answer, with the failure named per account.
    ownerrez.failNext('properties', '429');
    const partial = await call<{ properties: Property[]; errors: { account: string; error: string }[] }>(
      a.client,
      'ownerrez_list_properties',
      {
        accounts: [one, two],
      },
    );
    expect(partial.properties).toHaveLength(1);
    expect(partial.errors).toEqual([
      { account: expect.any(String), account_email: expect.any(String), error: expect.stringMatching(/rate-limiting.*Try again/) },
    ]);
    expect(partial.errors[0]?.account).not.toBe(partial.properties[0]?.account);

    // A booking of the second account is not in the first.
    const missing = await refusal(a.client, 'ownerrez_get_booking', { booking_id: bookingId(second, 1) });
    expect(missing).toContain(`no booking ${bookingId(second, 1)} in the OwnerRez account ${first.user.email}`);
    const found = await call<{ booking: Booking }>(a.client, 'ownerrez_get_booking', { booking_id: bookingId(second, 1), account: two });
    expect(found.booking).toMatchObject({ account: two, guest_name: 'gusguest1 Traveller' });
    await Promise.all([a.client.close(), b.client.close()]);
  });

  it('ends a merged call with 401 when one linked account’s token is refused, then names that dead account beside the live one’s answer', async () => {
    const [nia, oto] = [host('nia'), host('oto')];
    const agent = new UserAgent();
    const connected = await signIn(nia, agent);
    const linked = await signIn(oto, agent);
    await linked.client.close();
    const { connections } = await call<{ connections: { account: string }[] }>(connected.client, 'list_connections');
    const [one, two] = connections.map((c) => c.account) as [string, string];
    await call(connected.client, 'ownerrez_list_properties', { account: two });
    for (const token of tokensOf(oto)) if (token) ownerrez.revokeToken(token);

    const reply = await rawCall(connected, 'tools/call', { name: 'ownerrez_list_properties', arguments: { accounts: [one, two] } });
    expect(reply.status).toBe(401);

    // The user signs in again as the first account; the second stays dead until they sign in as it.
    ownerrez.user = nia.user;
    const { client, transport, oauth } = connected;
    await expect(client.callTool({ name: 'ownerrez_list_properties', arguments: {} })).rejects.toBeInstanceOf(UnauthorizedError);
    await finishAuthorization(transport, oauth, agent, gatehouse.url, 'ownerrez');
    const seen = ownerrez.apiCalls.length;
    const merged = await call<{ properties: Property[]; errors: { account: string; error: string }[] }>(
      client,
      'ownerrez_list_properties',
      {
        accounts: [one, two],
      },
    );
    expect(merged.properties.map((p) => [p.account, p.name])).toEqual([[one, 'nia Lake House']]);
    expect(merged.errors).toEqual([{ account: two, account_email: oto.user.email, error: expect.stringMatching(/needs reconnecting/) }]);
    expect(merged.text).toContain(`${oto.user.email}: This OwnerRez connection needs reconnecting`);
    expect(ownerrez.apiCalls.slice(seen).map((c) => c.userId)).toEqual([nia.user.id]); // the dead grant was not even tried
    // Named alone, it is the caller's choice to act as it: 401 again, so the client signs in (as it) again.
    expect((await rawCall(connected, 'tools/call', { name: 'ownerrez_list_properties', arguments: { account: two } })).status).toBe(401);
    await client.close();
  });

  it('answers a booking id of another user’s account exactly as one that does not exist, and shows nothing of it', async () => {
    const [hal, ivy] = [host('hal'), host('ivy')];
    const [atHal, atIvy] = [await signIn(hal), await signIn(ivy)];
    const foreign = bookingId(ivy, 1);
    const theirs = await refusal(atHal.client, 'ownerrez_get_booking', { booking_id: foreign });
    const nobodys = await refusal(atHal.client, 'ownerrez_get_booking', { booking_id: 987_654_321 });
    expect(theirs.replace(String(foreign), 'N')).toBe(nobodys.replace('987654321', 'N'));
    expect(theirs).not.toContain('ivy');
    // Ivy still reads it.
    expect((await call<{ booking: Booking }>(atIvy.client, 'ownerrez_get_booking', { booking_id: foreign })).booking.id).toBe(foreign);
    await Promise.all([atHal.client.close(), atIvy.client.close()]);
  });

  it('refuses hostile arguments with schema or permission errors before reaching OwnerRez, never a 5xx', async () => {
    const [jon, kim] = [host('jon'), host('kim')];
    const atJon = await signIn(jon);
    const atKim = await signIn(kim);
    const kimConnection = (await call<{ connections: { account: string }[] }>(atKim.client, 'list_connections')).connections[0]?.account;
    const huge = 'x'.repeat(200_000);
    const cases: [string, object, RegExp][] = [
      ['ownerrez_get_booking', { booking_id: '123' }, /Input validation error/],
      ['ownerrez_get_booking', { booking_id: -1 }, /Input validation error/],
      ['ownerrez_get_booking', { booking_id: 0 }, /Input validation error/],
      ['ownerrez_get_booking', { booking_id: 1.5 }, /Input validation error/],
      ['ownerrez_get_booking', { booking_id: 2 ** 60 }, /Input validation error/],
      ['ownerrez_get_booking', {}, /Input validation error/],
      ['ownerrez_get_booking', { booking_id: 1, accounts: ['a'] }, /Input validation error/],
      ['ownerrez_list_bookings', { property_ids: [-5] }, /Input validation error/],
      ['ownerrez_list_bookings', { property_ids: Array.from({ length: 51 }, (_, i) => i + 1) }, /Input validation error/],
      ['ownerrez_list_bookings', { property_ids: '1,2' }, /Input validation error/],
      ['ownerrez_list_bookings', { from: '2040-02-01', to: '2040-01-01' }, /`from` must not be after `to`/],
      ['ownerrez_list_bookings', { from: 'tomorrow' }, /Input validation error/],
      ['ownerrez_list_bookings', { from: '2040-02-30' }, /Input validation error/],
      ['ownerrez_list_bookings', { changed_since: '2040-01-01' }, /Input validation error/],
      ['ownerrez_list_bookings', { status: 'cancelled' }, /Input validation error/],
      ['ownerrez_list_bookings', { limit: 10_000 }, /Input validation error/],
      ['ownerrez_list_bookings', { since: '2040-01-01' }, /Input validation error/],
      ['ownerrez_list_bookings', { account: huge }, /Input validation error/],
      ['ownerrez_list_bookings', { accounts: Array.from({ length: 11 }, () => jon.user.email) }, /Input validation error/],
      ['ownerrez_list_bookings', { account: jon.user.email, accounts: [jon.user.email] }, /either `account` or `accounts`/],
      ['ownerrez_list_properties', { include_inactive: 'yes' }, /Input validation error/],
      // Another user's connection, by id or email, is simply not one of the caller's.
      ['ownerrez_list_bookings', { account: kimConnection }, /None of your connected OwnerRez accounts is/],
      ['ownerrez_list_properties', { accounts: [kim.user.email] }, /None of your connected OwnerRez accounts is/],
      ['ownerrez_get_booking', { booking_id: bookingId(kim, 1), account: kimConnection }, /None of your connected OwnerRez accounts is/],
    ];
    const before = ownerrez.apiCalls.length;
    for (const [name, args, message] of cases) {
      const reply = await rawCall(atJon, 'tools/call', { name, arguments: args });
      const label = `${name} ${JSON.stringify(args).slice(0, 120)}`;
      expect(reply.status, label).toBe(200);
      expect(reply.body.result?.isError, label).toBe(true);
      expect(textOf(reply.body.result), label).toMatch(message);
      expect(textOf(reply.body.result).length, label).toBeLessThan(2000);
    }
    expect(ownerrez.apiCalls.length).toBe(before);
    await Promise.all([atJon.client.close(), atKim.client.close()]);
  });

  it('turns a token OwnerRez no longer accepts into a dead grant: HTTP 401 from /mcp, and the client re-authorizes and works again', async () => {
    const lu = host('lu');
    const connected = await signIn(lu);
    await call(connected.client, 'ownerrez_list_properties');
    for (const token of tokensOf(lu)) if (token) ownerrez.revokeToken(token); // the host removed the app at OwnerRez
    const tokenCalls = ownerrez.calls.token;

    const reply = await rawCall(connected, 'tools/call', { name: 'ownerrez_list_bookings', arguments: {} });
    expect(reply.status).toBe(401);
    expect(reply.headers.get('www-authenticate')).toMatch(/^Bearer .*error="invalid_token".*resource_metadata="/);
    expect(reply.body.result?.isError).toBe(true);
    expect(textOf(reply.body.result)).toMatch(/reconnect/i);
    expect(ownerrez.calls.token).toBe(tokenCalls); // OwnerRez has no refresh grant: nothing to try
    const db = new Database(gatehouse.databasePath, { readonly: true, fileMustExist: true });
    try {
      expect(db.prepare('SELECT status FROM upstream_accounts WHERE email = ?').get(lu.user.email)).toEqual({ status: 'dead' });
    } finally {
      db.close();
    }

    // The real SDK client: 401 → its refresh is refused → a new authorization, a new OwnerRez token.
    const { client, transport, oauth, agent } = connected;
    await expect(client.callTool({ name: 'ownerrez_list_properties', arguments: {} })).rejects.toBeInstanceOf(UnauthorizedError);
    await finishAuthorization(transport, oauth, agent, gatehouse.url, 'ownerrez');
    const again = await call<{ properties: Property[] }>(client, 'ownerrez_list_properties');
    expect(again.properties.map((p) => p.name)).toEqual(['lu Lake House']);
    expect(tokensOf(lu).size).toBe(2);
    await client.close();
  });

  it('answers 403, 429, 500, garbage and a dropped connection with a clear message, keeps the grant, and works on the next call', async () => {
    const mo = host('mo');
    const { client } = await signIn(mo);
    const cases = [
      ['bookings', '403', /lacks permission/],
      ['booking', '429', /rate-limiting requests \(429\)\. Try again/],
      ['properties', '500', /having trouble \(500\)\. Try again/],
      ['bookings', 'garbage', /could not read\. Try again/],
      ['booking', 'down', /could not be reached\. Try again/],
    ] as const;
    const toolFor = { bookings: 'ownerrez_list_bookings', booking: 'ownerrez_get_booking', properties: 'ownerrez_list_properties' };
    for (const [endpoint, mode, message] of cases) {
      ownerrez.failNext(endpoint, mode);
      const args = endpoint === 'booking' ? { booking_id: bookingId(mo, 1) } : {};
      const text = await refusal(client, toolFor[endpoint], args);
      expect(text, `${endpoint} ${mode}`).toMatch(message);
      expect(text).not.toMatch(/maintenance|Server Error|ip_blocked|rate_limited|\n\s+at /);
      expect(await call(client, toolFor[endpoint], args)).toBeTruthy();
    }
    const db = new Database(gatehouse.databasePath, { readonly: true, fileMustExist: true });
    try {
      expect(db.prepare('SELECT status FROM upstream_accounts WHERE email = ?').get(mo.user.email)).toEqual({ status: 'ok' });
    } finally {
      db.close();
    }
    await client.close();
  });

  it('never lets an OwnerRez token (a canary) into a response, the database or a log line, nor guest contact details into a response', async () => {
    const canaries = ownerrez.issuedTokens();
    expect(canaries.length).toBeGreaterThan(10);
    const bodies = (await Promise.all(responseBodies)).join('\n');
    expect(bodies).toContain('Traveller'); // the tools' answers are in what was recorded
    const stored = databaseBytes(gatehouse.databasePath);
    const logs = gatehouse.logs.join('');
    for (const canary of canaries) {
      expect(bodies).not.toContain(canary);
      expect(stored).not.toContain(canary);
      expect(logs).not.toContain(canary);
    }
    for (const personal of ['@mail.example', 'Private Road', 'Hidden Lane', 'gate code', '-4711', '+1 555'])
      expect(bodies).not.toContain(personal);
  });
});
