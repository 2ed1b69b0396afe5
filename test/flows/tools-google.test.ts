import { existsSync, readFileSync } from 'node:fs';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeEvent, type FakeGoogleApi, startFakeGoogleApi } from '../support/fake-google-api.ts';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import {
  connectThroughUpstream,
  connectThroughUpstreamWithFetch,
  federationEnv,
  finishAuthorization,
  GOOGLE_CLIENT,
  ReconnectingOAuthClient,
  rawMcpCall,
  recordingFetch,
  ScopedOAuthClient,
  SwitchingUserAgent,
} from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';

const SCOPE = 'mcp google.calendar';
const TOOLS = ['google_calendar_list_calendars', 'google_calendar_list_events'] as const;

interface Tagged {
  account: { id: string; email: string | null };
}
type CalendarItem = Tagged & { id: string; summary: string; primary: boolean };
type EventItem = Tagged & { id: string; summary: string | null; start: string | null; calendarId: string; allDay: boolean };
interface Answer {
  result: CallToolResult;
  text: string;
  calendars: CalendarItem[];
  events: EventItem[];
  truncated: boolean;
  failures: (Tagged & { message: string })[];
}

/** Calls a tool through the SDK client and keeps what a model would read: the text and the structured content. */
async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<Answer> {
  const result = (await client.callTool({ name, arguments: args })) as CallToolResult;
  const text = result.content.map((part) => (part.type === 'text' ? part.text : '')).join('\n');
  const structured = (result.structuredContent ?? {}) as Partial<Answer>;
  return {
    result,
    text,
    calendars: structured.calendars ?? [],
    events: structured.events ?? [],
    truncated: structured.truncated ?? false,
    failures: structured.failures ?? [],
  };
}

/** A tool call that must succeed; fails the test with the tool's own words if it did not. */
async function ok(client: Client, name: string, args: Record<string, unknown> = {}): Promise<Answer> {
  const answer = await call(client, name, args);
  expect(answer.result.isError, answer.text).toBeFalsy();
  return answer;
}

async function refused(client: Client, name: string, args: Record<string, unknown>): Promise<string> {
  const answer = await call(client, name, args);
  expect(answer.result.isError, answer.text).toBe(true);
  return answer.text;
}

let serial = 0;
const person = (label: string) => {
  serial += 1;
  return { email: `${label}-${serial}@example.com`, name: `${label} ${serial}`, sub: String(4n * 10n ** 20n + BigInt(serial)) };
};
const at = (day: number, hour: number) => ({ dateTime: `2026-05-${String(day).padStart(2, '0')}T${String(hour).padStart(2, '0')}:00:00Z` });
const event = (id: string, summary: string, day: number, hour: number, extra: Partial<FakeEvent> = {}): FakeEvent => ({
  id,
  summary,
  start: at(day, hour),
  end: at(day, hour + 1),
  ...extra,
});
const MAY = { timeMin: '2026-05-01T00:00:00Z', timeMax: '2026-06-01T00:00:00Z' };

describe('Google Calendar tools, end to end through the SDK client', () => {
  let google: FakeOidc;
  let api: FakeGoogleApi;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    google = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret });
    api = await startFakeGoogleApi({ issuer: google.issuer });
    gatehouse = await startGatehouse({ ...federationEnv({ google }), GOOGLE_API_URL: api.url });
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([api?.close(), google?.close()]);
  });

  /** A Google user with two calendars and events in May 2026, signed in through a client holding `mcp google.calendar`. */
  async function signIn(label: string, agent?: SwitchingUserAgent, oauth = new ScopedOAuthClient(SCOPE)) {
    const user = person(label);
    api.setCalendars(user.email, [
      { id: user.email, summary: `${label}'s calendar`, primary: true, accessRole: 'owner', timeZone: 'Europe/London' },
      { id: `team-${serial}@group.calendar.google.com`, summary: `${label}'s team`, accessRole: 'reader' },
    ]);
    api.setEvents(user.email, 'primary', [
      event(`${label}-1`, `${label} standup`, 4, 9),
      event(`${label}-2`, `${label} dentist`, 12, 15, { location: 'High Street 1' }),
      event(`${label}-3`, `${label} review`, 20, 10, { description: 'quarterly numbers' }),
      { id: `${label}-4`, summary: `${label} holiday`, start: { date: '2026-05-25' }, end: { date: '2026-05-26' } },
      event(`${label}-june`, `${label} in June`, 30, 23, { end: { dateTime: '2026-06-01T00:30:00Z' } }),
    ]);
    google.user = user;
    agent?.signOutUpstream();
    const session = await connectThroughUpstream(gatehouse.url, 'google', {
      oauth,
      ...(agent ? { agent } : {}),
    });
    return { user, ...session };
  }

  it('lists both tools with their input schemas whatever the token holds', async () => {
    const { client } = await signIn('lister');
    const { tools } = await client.listTools();
    for (const name of TOOLS) expect(tools.map((tool) => tool.name)).toContain(name);
    const events = tools.find((tool) => tool.name === 'google_calendar_list_events');
    expect(Object.keys(events?.inputSchema.properties ?? {}).sort()).toEqual(
      ['account', 'accounts', 'calendarId', 'maxResults', 'q', 'timeMax', 'timeMin'].sort(),
    );
    expect(events?.annotations?.readOnlyHint).toBe(true);
    expect(events?.outputSchema?.properties).toHaveProperty('events');
    await client.close();
  });

  it("lists the caller's calendars and events with their own Google token, read live from the Calendar API", async () => {
    const { client, user } = await signIn('ada');
    const served = api.served.length;

    const calendars = await ok(client, 'google_calendar_list_calendars');
    expect(calendars.calendars.map((c) => [c.summary, c.primary])).toEqual([
      ["ada's calendar", true],
      ["ada's team", false],
    ]);
    expect(calendars.calendars[0]?.account).toEqual({ id: expect.any(String), email: user.email });
    expect(calendars.text).toContain("ada's calendar (primary)");

    const events = await ok(client, 'google_calendar_list_events', MAY);
    expect(events.events.map((e) => e.summary)).toEqual(['ada standup', 'ada dentist', 'ada review', 'ada holiday', 'ada in June']);
    expect(events.events.find((e) => e.summary === 'ada holiday')).toMatchObject({ allDay: true, start: '2026-05-25' });
    expect(events.text).toContain('ada dentist at High Street 1');
    expect(events.truncated).toBe(false);

    // What reached Google: the documented query, and only Ada's own canary bearer.
    const query = api.served.at(-1)?.query;
    expect(Object.fromEntries(query ?? [])).toEqual({ ...MAY, singleEvents: 'true', orderBy: 'startTime', maxResults: '25' });
    const mine = api.served.slice(served);
    expect(mine).toHaveLength(2);
    for (const request of mine) {
      expect(request.email).toBe(user.email);
      expect(request.bearer).toMatch(/^CANARY-google-at-/);
      expect(google.issuedTokens()).toContain(request.bearer);
      expect(request.userAgent).toMatch(/^Gatehouse\//);
    }
    await client.close();
  });

  it('passes the range, query and limit to Google and says when more events match', async () => {
    const { client } = await signIn('grace');
    const narrow = await ok(client, 'google_calendar_list_events', {
      timeMin: '2026-05-10T00:00:00+02:00',
      timeMax: '2026-05-21T00:00:00Z',
    });
    expect(narrow.events.map((e) => e.summary)).toEqual(['grace dentist', 'grace review']);

    const searched = await ok(client, 'google_calendar_list_events', { ...MAY, q: 'QUARTERLY' });
    expect(searched.events.map((e) => e.summary)).toEqual(['grace review']);
    expect(api.served.at(-1)?.query.get('q')).toBe('QUARTERLY');

    const limited = await ok(client, 'google_calendar_list_events', { ...MAY, maxResults: 2 });
    expect(limited.events.map((e) => e.summary)).toEqual(['grace standup', 'grace dentist']);
    expect(limited.truncated).toBe(true);
    expect(limited.text).toContain('More events match');

    // Another calendar by its id; without a range the tool reads from now on (Google would start at the beginning of time).
    const before = Date.now();
    const team = await ok(client, 'google_calendar_list_events', { calendarId: `team-${serial}@group.calendar.google.com` });
    expect(team.events).toEqual([]);
    const timeMin = Date.parse(api.served.at(-1)?.query.get('timeMin') ?? '');
    expect(timeMin).toBeGreaterThanOrEqual(before - 1000);
    expect(timeMin).toBeLessThanOrEqual(Date.now());
    await client.close();
  });

  describe('two linked Google accounts', () => {
    let session: Awaited<ReturnType<typeof signIn>>;
    let second: Awaited<ReturnType<typeof signIn>>;
    let ids: Record<string, string>;
    beforeAll(async () => {
      const agent = new SwitchingUserAgent(gatehouse.url);
      session = await signIn('home', agent);
      second = await signIn('work', agent);
      const listed = await session.client.callTool({ name: 'list_connections', arguments: {} });
      const connections = (listed.structuredContent as { connections: { account: string; email: string }[] }).connections;
      expect(connections).toHaveLength(2);
      ids = Object.fromEntries(connections.map((c) => [c.email, c.account]));
    });
    afterAll(async () => Promise.all([session?.client.close(), second?.client.close()]));

    it('uses the first account by default and the one `account` names, by connection id or by email', async () => {
      const fallback = await ok(session.client, 'google_calendar_list_calendars');
      expect(fallback.calendars.every((c) => c.account.email === session.user.email)).toBe(true);

      for (const account of [second.user.email, ids[second.user.email], second.user.email.toUpperCase()]) {
        const served = api.served.length;
        const chosen = await ok(session.client, 'google_calendar_list_events', { ...MAY, account });
        expect(chosen.events.map((e) => e.summary)).toContain('work dentist');
        expect(chosen.events.every((e) => e.account.id === ids[second.user.email])).toBe(true);
        expect(api.served.slice(served).map((request) => request.email)).toEqual([second.user.email]);
      }
    });

    it('merges `accounts` into one list, earliest first, each item tagged with its account', async () => {
      const merged = await ok(session.client, 'google_calendar_list_events', {
        ...MAY,
        accounts: [session.user.email, ids[second.user.email]],
      });
      expect(merged.events.slice(0, 4).map((e) => e.summary)).toEqual(['home standup', 'work standup', 'home dentist', 'work dentist']);
      for (const item of merged.events) {
        const owner = item.summary?.startsWith('home') ? session.user.email : second.user.email;
        expect(item.account).toEqual({ id: ids[owner], email: owner });
      }
      expect(merged.text).toContain(`[${second.user.email}]`);

      const calendars = await ok(second.client, 'google_calendar_list_calendars', { accounts: [second.user.email, session.user.email] });
      expect(calendars.calendars).toHaveLength(4);
      expect(new Set(calendars.calendars.map((c) => c.account.email))).toEqual(new Set([session.user.email, second.user.email]));
    });

    it('keeps the other accounts’ results when one account fails, and says which failed', async () => {
      api.failNext('403');
      const partial = await ok(session.client, 'google_calendar_list_calendars', { accounts: [session.user.email, second.user.email] });
      expect(partial.calendars).toHaveLength(2);
      expect(partial.failures).toHaveLength(1);
      expect(partial.failures[0]?.message).toContain('lacks permission');
      expect(partial.failures[0]?.account.email).not.toBe(partial.calendars[0]?.account.email);
      expect(partial.text).toContain('Not read:');
    });
  });

  it('leaves a linked account whose Google grant died out of a merged call and names it, instead of answering 401 on every call', async () => {
    const agent = new SwitchingUserAgent(gatehouse.url);
    const alive = await signIn('alive', agent, new ReconnectingOAuthClient(SCOPE));
    const doomed = await signIn('doomed', agent);
    await doomed.client.close();
    // Google refuses the doomed account's token, and again after one refresh: its grant dies, and with it
    // the user's Gatehouse grants (the client must re-authorize once, which it does as the live account).
    api.failNext('401', 2);
    const killed = await rawMcpCall(gatehouse.url, alive, 'tools/call', {
      name: 'google_calendar_list_calendars',
      arguments: { account: doomed.user.email },
    });
    expect(killed.status).toBe(401);
    google.user = alive.user;
    agent.signOutUpstream();
    await expect(alive.client.callTool({ name: 'list_connections', arguments: {} })).rejects.toThrow(/Unauthorized/);
    await finishAuthorization(alive.transport, alive.oauth, agent, gatehouse.url, 'google');

    const served = api.served.length;
    const merged = await ok(alive.client, 'google_calendar_list_calendars', { accounts: [alive.user.email, doomed.user.email] });
    expect(merged.calendars.map((c) => c.account.email)).toEqual([alive.user.email, alive.user.email]);
    expect(merged.failures).toEqual([
      { account: { id: expect.any(String), email: doomed.user.email }, message: expect.stringMatching(/needs reconnecting/) },
    ]);
    expect(merged.text).toContain(doomed.user.email);
    expect(api.served.slice(served).map((request) => request.email)).toEqual([alive.user.email]); // the dead grant was not tried
    // Named alone it is the caller's choice to act as it: 401, so the client signs in (as it) again.
    const alone = await rawMcpCall(gatehouse.url, alive, 'tools/call', {
      name: 'google_calendar_list_calendars',
      arguments: { account: doomed.user.email },
    });
    expect(alone.status).toBe(401);
    await alive.client.close();
  });

  describe('hostile arguments', () => {
    let session: Awaited<ReturnType<typeof signIn>>;
    let other: Awaited<ReturnType<typeof signIn>>;
    beforeAll(async () => {
      session = await signIn('mallory');
      other = await signIn('victim');
    });
    afterAll(async () => Promise.all([session?.client.close(), other?.client.close()]));

    const huge = 'x'.repeat(100_000);
    const schemaErrors: [string, string, Record<string, unknown>][] = [
      ['a number for calendarId', 'google_calendar_list_events', { calendarId: 42 }],
      ['a string for maxResults', 'google_calendar_list_events', { maxResults: 'ten' }],
      ['maxResults above 250', 'google_calendar_list_events', { maxResults: 251 }],
      ['a fractional maxResults', 'google_calendar_list_events', { maxResults: 2.5 }],
      ['a time without an offset', 'google_calendar_list_events', { timeMin: '2026-05-01T00:00:00' }],
      ['a date that is not a time', 'google_calendar_list_events', { timeMax: 'next tuesday' }],
      ['timeMin after timeMax', 'google_calendar_list_events', { timeMin: '2026-06-01T00:00:00Z', timeMax: '2026-05-01T00:00:00Z' }],
      [
        'timeMin equal to timeMax',
        'google_calendar_list_events',
        { timeMin: '2026-06-01T00:00:00Z', timeMax: '2026-06-01T02:00:00+02:00' },
      ],
      ['a 100 KB calendarId', 'google_calendar_list_events', { calendarId: huge }],
      ['a 100 KB query', 'google_calendar_list_events', { q: huge }],
      ['a 100 KB account', 'google_calendar_list_calendars', { account: huge }],
      ['a calendarId that climbs out of its path', 'google_calendar_list_events', { calendarId: '..' }],
      ['a calendarId with a slash', 'google_calendar_list_events', { calendarId: 'primary/../../users/me/calendarList' }],
      ['a string for accounts', 'google_calendar_list_calendars', { accounts: 'mallory' }],
      ['eleven accounts', 'google_calendar_list_calendars', { accounts: Array.from({ length: 11 }, (_, i) => `a${i}@example.com`) }],
      ['both account and accounts', 'google_calendar_list_calendars', { account: 'a@example.com', accounts: ['a@example.com'] }],
    ];
    for (const [what, tool, args] of schemaErrors) {
      it(`refuses ${what} with a schema error before calling Google`, async () => {
        const calls = api.calls.calendarList + api.calls.events;
        const text = await refused(session.client, tool, args);
        expect(text).toMatch(/^MCP error -32602: Input validation error: Invalid arguments for tool google_calendar_list_/);
        expect(text.length).toBeLessThan(2000);
        expect(text).not.toContain('xxxxxxxxxx');
        expect(api.calls.calendarList + api.calls.events).toBe(calls);
      });
    }

    it("refuses another user's connection id and an unknown account like a stranger's, and reads nobody's calendar", async () => {
      const listed = await other.client.callTool({ name: 'list_connections', arguments: {} });
      const victimId = (listed.structuredContent as { connections: { account: string }[] }).connections[0]?.account as string;
      const served = api.served.length;
      for (const account of [victimId, other.user.email, 'nobody@example.com', `${victimId}x`]) {
        const text = await refused(session.client, 'google_calendar_list_events', { ...MAY, account });
        expect(text).toContain('None of your connected Google accounts is');
        const merged = await refused(session.client, 'google_calendar_list_calendars', { accounts: [session.user.email, account] });
        expect(merged).toContain('None of your connected Google accounts is');
      }
      expect(api.served.length).toBe(served);
    });
  });

  describe('when Google fails', () => {
    let session: Awaited<ReturnType<typeof signIn>>;
    beforeAll(async () => {
      session = await signIn('flaky');
    });
    afterAll(async () => session?.client.close());

    it('refreshes the Google token once on a 401 and retries with the new one', async () => {
      await ok(session.client, 'google_calendar_list_calendars');
      const before = api.served.at(-1)?.bearer;
      const refreshes = google.calls.token.refresh_token;
      const served = api.served.length;
      api.failNext('401');
      const answer = await ok(session.client, 'google_calendar_list_calendars');
      expect(answer.calendars).toHaveLength(2);
      expect(google.calls.token.refresh_token).toBe(refreshes + 1);
      const retried = api.served.slice(served);
      expect(retried).toHaveLength(1);
      expect(retried[0]?.email).toBe(session.user.email);
      // The retry carried the refreshed token, not the refused one.
      expect(retried[0]?.bearer).not.toBe(before);
      expect(google.issuedTokens()).toContain(retried[0]?.bearer);
    });

    for (const [mode, words] of [
      ['403', /lacks permission for this \(403\)/],
      ['429', /rate-limiting requests \(429\)\. Try again in a minute/],
      ['500', /having trouble \(500\)\. Try again in a moment/],
      ['garbage', /could not read\. Try again in a moment/],
    ] as const) {
      it(`answers Google's ${mode} with a clear tool error the model can act on, and stays usable`, async () => {
        api.failNext(mode);
        const text = await refused(session.client, 'google_calendar_list_events', MAY);
        expect(text).toMatch(words);
        expect(text).not.toMatch(/at .*\.ts:\d+|Error:/); // no stack trace
        expect((await ok(session.client, 'google_calendar_list_events', MAY)).events).toHaveLength(5);
      });
    }
  });

  it('gives up on a Google that does not answer within the upstream timeout with a retryable tool error', async () => {
    const { client } = await signIn('patient');
    api.failNext('slow');
    const started = Date.now();
    const text = await refused(client, 'google_calendar_list_calendars', {});
    expect(text).toMatch(/did not answer in time\. Try again in a moment/);
    expect(Date.now() - started).toBeLessThan(12_000);
    await client.close();
  });

  it('keeps upstream tokens (canaries) out of every response, the database file and the logs', async () => {
    const recorder = recordingFetch();
    const user = person('canary');
    google.user = user;
    const { client } = await connectThroughUpstreamWithFetch(gatehouse.url, 'google', recorder.fetch, {
      oauth: new ScopedOAuthClient(SCOPE),
    });
    await ok(client, 'google_calendar_list_calendars');
    await ok(client, 'google_calendar_list_events', MAY);
    api.failNext('401');
    await ok(client, 'google_calendar_list_events', MAY);
    await client.close();
    await recorder.settled();

    const canaries = google.issuedTokens();
    expect(canaries.length).toBeGreaterThan(2);
    const database = [gatehouse.databasePath, `${gatehouse.databasePath}-wal`]
      .filter(existsSync)
      .map((file) => readFileSync(file).toString('latin1'))
      .join('');
    const places = {
      'responses to the MCP client': recorder.responses.map((r) => `${r.headers}\n${r.body}`).join('\n'),
      'the database file': database,
      'the logs': gatehouse.logs.join('\n'),
    };
    expect(places['responses to the MCP client']).toContain(user.email);
    for (const [place, text] of Object.entries(places)) {
      for (const canary of canaries) expect(text.includes(canary), `${canary.slice(0, 20)}… in ${place}`).toBe(false);
      expect(text, place).not.toContain('CANARY-');
    }
  });
});

describe('a Google account that did not grant calendar access', () => {
  let google: FakeOidc;
  let api: FakeGoogleApi;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    google = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret });
    api = await startFakeGoogleApi({ issuer: google.issuer });
    // The operator asks Google for no API scope: the user's token can sign in but not read calendars.
    gatehouse = await startGatehouse({ ...federationEnv({ google }), GOOGLE_API_URL: api.url, GOOGLE_SCOPES: '' });
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([api?.close(), google?.close()]);
  });

  it('says so and what to do, without calling the Calendar API', async () => {
    google.user = person('narrow');
    const { client } = await connectThroughUpstream(gatehouse.url, 'google', { oauth: new ScopedOAuthClient(SCOPE) });
    expect(google.lastAuthorizationParams?.get('scope')).not.toContain('calendar');
    for (const tool of TOOLS) {
      const text = await refused(client, tool, {});
      expect(text).toContain('has not given Gatehouse access to its calendars');
      expect(text).toContain('Reconnect');
      expect(text).toContain('GOOGLE_SCOPES');
    }
    expect(api.calls).toEqual({ calendarList: 0, events: 0, refused: 0 });
    await client.close();
  });
});
