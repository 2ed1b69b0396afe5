import { existsSync, readFileSync } from 'node:fs';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeGraph, type FakeGraphEvent, startFakeGraph } from '../support/fake-graph.ts';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import {
  connectThroughUpstream,
  connectThroughUpstreamWithFetch,
  ENTRA_CLIENT,
  federationEnv,
  finishAuthorization,
  linkUpstreamAccount,
  ReconnectingOAuthClient,
  rawMcpCall,
  recordingFetch,
  ScopedOAuthClient,
  SwitchingUserAgent,
} from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';

interface Answer {
  isError: boolean;
  text: string;
  data: Record<string, unknown>;
}
interface Event {
  account: string;
  accountEmail: string | null;
  subject: string | null;
  start: string;
  end: string;
  isAllDay: boolean;
  location: string | null;
  organizer: { name: string | null; email: string | null } | null;
}

/** Calls a tool through the real SDK client; a transport-level failure (any non-2xx but 401/503 handled by the SDK) throws. */
async function call(client: Client, name: string, args: Record<string, unknown> = {}): Promise<Answer> {
  const result = await client.callTool({ name, arguments: args });
  const text = (result.content as { type: string; text?: string }[]).map((part) => part.text ?? '').join('\n');
  return { isError: result.isError === true, text, data: (result.structuredContent ?? {}) as Record<string, unknown> };
}

async function ok(client: Client, name: string, args: Record<string, unknown> = {}): Promise<Answer> {
  const answer = await call(client, name, args);
  expect(answer.isError, answer.text).toBe(false);
  return answer;
}

const eventsOf = (answer: Answer) => answer.data.events as Event[];

let serial = 0;
/** A person with an Entra object id nobody else in this file has. */
function person(label: string): { email: string; name: string; oid: string } {
  serial += 1;
  const tail = String(serial).padStart(12, '0');
  return { email: `${label}-${serial}@contoso.example`, name: `${label} Number${serial}`, oid: `0a0a0a0a-0a0a-4a0a-8a0a-${tail}` };
}

/** Events in a fixed future week, so explicit windows are exact. */
const at = (day: number, hour: number) => new Date(Date.UTC(2031, 2, day, hour)).toISOString();
const meeting = (subject: string, day: number, hour: number, hours = 1): FakeGraphEvent => ({
  subject,
  start: at(day, hour),
  end: at(day, hour + hours),
  location: `${subject} room`,
  organizer: { name: 'Org Anizer', address: 'organizer@contoso.example' },
});
const WEEK = { start: at(3, 0), end: at(10, 0) };

/** The MCP client asks for the Microsoft family's scope beside the base one, as a client configured for these tools does. */
const SCOPE = 'mcp microsoft';
const scoped = () => new ScopedOAuthClient(SCOPE);

const databaseBytes = (path: string): string =>
  [path, `${path}-wal`]
    .filter(existsSync)
    .map((file) => readFileSync(file).toString('latin1'))
    .join('');

describe('Microsoft Graph tools (microsoft_profile, microsoft_calendar_list_events)', () => {
  let entra: FakeOidc;
  let graph: FakeGraph;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    entra = await startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret });
    graph = await startFakeGraph({ issuer: entra.issuer, slowMs: 12_000 });
    gatehouse = await startGatehouse({ ...federationEnv({ entra }), GRAPH_API_URL: graph.url });
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([graph?.close(), entra?.close()]);
  });

  /** Signs `who` in through Entra with a fresh MCP client and browser. */
  async function signIn(who: { email: string; name: string; oid: string }) {
    entra.user = who;
    return connectThroughUpstream(gatehouse.url, 'entra', { oauth: scoped() });
  }

  /** Graph requests made since `from`, for one user. */
  const requestsOf = (oid: string, from = 0) => graph.requests.slice(from).filter((request) => request.oid === oid);

  it("reads the caller's profile from Graph /v1.0/me with $select, as the caller, with the caller's own canary bearer", async () => {
    const ada = person('ada');
    graph.setProfile(ada.oid, { jobTitle: 'Analyst', officeLocation: 'Building 1', preferredLanguage: 'en-GB' });
    const { client } = await signIn(ada);
    const tools = (await client.listTools()).tools.map((tool) => tool.name);
    expect(tools).toEqual(expect.arrayContaining(['microsoft_profile', 'microsoft_calendar_list_events']));

    const seen = graph.requests.length;
    const answer = await ok(client, 'microsoft_profile');
    expect(answer.data).toEqual({
      account: expect.any(String),
      displayName: ada.name,
      mail: ada.email,
      userPrincipalName: ada.email,
      jobTitle: 'Analyst',
      officeLocation: 'Building 1',
      preferredLanguage: 'en-GB',
      id: ada.oid,
    });
    expect(answer.text).toContain(`${ada.name} <${ada.email}> — Analyst, Building 1`);

    const [request, ...more] = graph.requests.slice(seen);
    expect(more).toHaveLength(0);
    expect(request?.path).toBe('/v1.0/me');
    expect(request?.query.get('$select')?.split(',').sort()).toEqual(
      ['displayName', 'mail', 'userPrincipalName', 'jobTitle', 'officeLocation', 'preferredLanguage', 'id'].sort(),
    );
    expect(request?.oid).toBe(ada.oid);
    expect(request?.bearer).toMatch(/^CANARY-entra-at-/);
    expect(entra.issuedTokens()).toContain(request?.bearer);
    expect(request?.userAgent).toMatch(/^Gatehouse\//);
    await client.close();
  });

  it('lists calendar events through calendarView: the window, $top, $orderby, $select and Prefer UTC are sent, answers are UTC and sorted, and a second page is reported, not fetched', async () => {
    const ada = person('cal');
    graph.setEvents(ada.oid, [
      meeting('Later', 5, 14),
      meeting('Before the window', 2, 9),
      meeting('Standup', 4, 9),
      { subject: 'Holiday', start: at(6, 0), end: at(7, 0), isAllDay: true },
      meeting('After the window', 11, 9),
    ]);
    const { client } = await signIn(ada);

    const seen = graph.requests.length;
    const answer = await ok(client, 'microsoft_calendar_list_events', WEEK);
    expect(answer.data).toMatchObject({ start: WEEK.start, end: WEEK.end, truncated: false });
    expect(eventsOf(answer).map((event) => event.subject)).toEqual(['Standup', 'Later', 'Holiday']);
    expect(eventsOf(answer)[0]).toEqual({
      account: expect.any(String),
      accountEmail: ada.email,
      subject: 'Standup',
      start: at(4, 9),
      end: at(4, 10),
      isAllDay: false,
      location: 'Standup room',
      organizer: { name: 'Org Anizer', email: 'organizer@contoso.example' },
      webLink: expect.stringMatching(/^https:\/\/outlook\.office365\.com\//),
    });
    expect(eventsOf(answer)[2]).toMatchObject({ subject: 'Holiday', isAllDay: true, organizer: null });
    expect(answer.text).toContain('3 event(s)');
    expect(answer.text).toContain('Standup');
    expect(answer.text).toContain('2031-03-06 (all day)');

    const request = graph.requests[seen];
    expect(request?.path).toBe('/v1.0/me/calendarView');
    expect(Object.fromEntries(request?.query ?? [])).toEqual({
      startDateTime: WEEK.start,
      endDateTime: WEEK.end,
      $top: '25',
      $orderby: 'start/dateTime',
      $select: 'subject,start,end,location,organizer,webLink,isAllDay',
    });
    expect(request?.prefer).toBe('outlook.timezone="UTC"');

    // $top 2 of 3: one page only, and the answer says there is more.
    const before = graph.calls.calendarView;
    const page = await ok(client, 'microsoft_calendar_list_events', { ...WEEK, top: 2 });
    expect(eventsOf(page).map((event) => event.subject)).toEqual(['Standup', 'Later']);
    expect(page.data.truncated).toBe(true);
    expect(page.text).toMatch(/More events exist in this range/);
    expect(graph.calls.calendarView).toBe(before + 1);
    await client.close();
  });

  it('defaults the window to now → 7 days and a start alone to start → 7 days', async () => {
    const ada = person('window');
    const soon = new Date(Date.now() + 2 * 3600_000).toISOString();
    graph.setEvents(ada.oid, [{ subject: 'Soon', start: soon, end: new Date(Date.parse(soon) + 3600_000).toISOString() }]);
    const { client } = await signIn(ada);

    const seen = graph.requests.length;
    const before = Date.now();
    const answer = await ok(client, 'microsoft_calendar_list_events');
    expect(eventsOf(answer).map((event) => event.subject)).toEqual(['Soon']);
    const query = graph.requests[seen]?.query;
    const start = Date.parse(query?.get('startDateTime') ?? '');
    expect(start).toBeGreaterThanOrEqual(before - 1000);
    expect(start).toBeLessThanOrEqual(Date.now());
    expect(Date.parse(query?.get('endDateTime') ?? '') - start).toBe(7 * 86_400_000);

    await ok(client, 'microsoft_calendar_list_events', { start: '2031-03-03T00:00:00+02:00' });
    expect(graph.requests.at(-1)?.query.get('startDateTime')).toBe('2031-03-02T22:00:00.000Z');
    expect(graph.requests.at(-1)?.query.get('endDateTime')).toBe('2031-03-09T22:00:00.000Z');
    await client.close();
  });

  it("never gives one user another's data: 40 interleaved calls of two users, each answered from the caller's own account with the caller's own bearer", async () => {
    const users = [person('alice'), person('bob')] as const;
    for (const user of users) {
      graph.setProfile(user.oid, { jobTitle: `${user.name} title` });
      graph.setEvents(user.oid, [meeting(`${user.name} meeting`, 4, 10)]);
    }
    const sessions = [await signIn(users[0]), await signIn(users[1])];
    const seen = graph.requests.length;
    const answers = await Promise.all(
      Array.from({ length: 40 }, async (_, index) => {
        const caller = index % 2;
        const tool = index % 4 < 2 ? 'microsoft_profile' : 'microsoft_calendar_list_events';
        const client = sessions[caller]?.client as Client;
        return { caller, tool, answer: await ok(client, tool, tool === 'microsoft_profile' ? {} : WEEK) };
      }),
    );
    for (const { caller, tool, answer } of answers) {
      const own = users[caller] as (typeof users)[number];
      const other = users[1 - caller] as (typeof users)[number];
      const everything = `${answer.text}\n${JSON.stringify(answer.data)}`;
      expect(everything, tool).toContain(own.name);
      expect(everything, tool).not.toContain(other.name);
      expect(everything, tool).not.toContain(other.email);
    }
    const bearers = users.map((user) => new Set(requestsOf(user.oid, seen).map((request) => request.bearer)));
    expect(requestsOf(users[0].oid, seen)).toHaveLength(20);
    expect(requestsOf(users[1].oid, seen)).toHaveLength(20);
    for (const bearer of bearers[0] ?? []) expect(bearers[1]?.has(bearer)).toBe(false);
    await Promise.all(sessions.map(({ client }) => client.close()));
  });

  describe('two linked Microsoft accounts', () => {
    const work = person('work');
    const home = person('home');
    let client: Client;
    let ids: { work: string; home: string };
    beforeAll(async () => {
      graph.setEvents(work.oid, [meeting('Work review', 4, 15), meeting('Work sync', 5, 9)]);
      graph.setEvents(home.oid, [meeting('Dentist', 4, 12), meeting('Dinner', 5, 19)]);
      graph.setProfile(home.oid, { jobTitle: 'Homemaker' });
      const agent = new SwitchingUserAgent(gatehouse.url);
      entra.user = work;
      await (await connectThroughUpstream(gatehouse.url, 'entra', { agent, oauth: scoped() })).client.close();
      entra.user = home;
      ({ client } = await linkUpstreamAccount(gatehouse.url, 'entra', agent, scoped()));
      const { connections } = (await ok(client, 'list_connections')).data as { connections: { account: string; email: string }[] };
      expect(connections.map((connection) => connection.email)).toEqual([work.email, home.email]);
      ids = { work: connections[0]?.account ?? '', home: connections[1]?.account ?? '' };
    });
    afterAll(async () => client?.close());

    it('uses the first account by default, and `account` (an id or an email) selects another', async () => {
      const subjects = async (args: Record<string, unknown>) =>
        eventsOf(await ok(client, 'microsoft_calendar_list_events', { ...WEEK, ...args })).map((event) => event.subject);
      expect(await subjects({})).toEqual(['Work review', 'Work sync']);
      expect(await subjects({ account: ids.home })).toEqual(['Dentist', 'Dinner']);
      expect(await subjects({ account: home.email.toUpperCase() })).toEqual(['Dentist', 'Dinner']);
      const profile = await ok(client, 'microsoft_profile', { account: home.email });
      expect(profile.data).toMatchObject({ account: ids.home, mail: home.email, jobTitle: 'Homemaker', id: home.oid });
      expect(requestsOf(home.oid).every((request) => !requestsOf(work.oid).some((mine) => mine.bearer === request.bearer))).toBe(true);
    });

    it('`accounts` merges both calendars in time order, each event tagged with its account', async () => {
      const answer = await ok(client, 'microsoft_calendar_list_events', { ...WEEK, accounts: [ids.work, home.email, ids.home] });
      expect(eventsOf(answer).map((event) => [event.subject, event.account, event.accountEmail])).toEqual([
        ['Dentist', ids.home, home.email],
        ['Work review', ids.work, work.email],
        ['Work sync', ids.work, work.email],
        ['Dinner', ids.home, home.email],
      ]);
      expect(answer.text).toContain(`Dentist @ Dentist room [${home.email}]`);
      // The merged list keeps `top` as a whole.
      const top = await ok(client, 'microsoft_calendar_list_events', { ...WEEK, accounts: [ids.work, ids.home], top: 3 });
      expect(eventsOf(top).map((event) => event.subject)).toEqual(['Dentist', 'Work review', 'Work sync']);
      expect(top.data.truncated).toBe(true);

      const both = await call(client, 'microsoft_calendar_list_events', { account: ids.work, accounts: [ids.home] });
      expect(both).toMatchObject({ isError: true, text: 'Pass either `account` or `accounts`, not both.' });
    });

    it('a Graph failure in one of the merged accounts fails the call and names that account', async () => {
      graph.failNext('403');
      const answer = await call(client, 'microsoft_calendar_list_events', { ...WEEK, accounts: [ids.work, ids.home] });
      expect(answer.isError).toBe(true);
      const named = new RegExp(`^(${work.email}|${home.email}): The Microsoft account lacks permission`);
      expect(answer.text).toMatch(named);
    });
  });

  it('refuses a merged call naming a linked account whose grant died with a tool error naming it, instead of answering 401 on every call', async () => {
    const [live, gone] = [person('live'), person('gone')];
    graph.setEvents(live.oid, [meeting('Live standup', 4, 9)]);
    const agent = new SwitchingUserAgent(gatehouse.url);
    entra.user = live;
    const session = await connectThroughUpstream(gatehouse.url, 'entra', { agent, oauth: new ReconnectingOAuthClient(SCOPE) });
    entra.user = gone;
    await (await linkUpstreamAccount(gatehouse.url, 'entra', agent, scoped())).client.close();
    // Graph refuses the second account's token, and again after one refresh: its grant dies, and with it the
    // user's Gatehouse grants (the client re-authorizes once, as the live account, which repairs nothing).
    graph.failNext('401', 2);
    const killed = await rawMcpCall(gatehouse.url, session, 'tools/call', {
      name: 'microsoft_calendar_list_events',
      arguments: { ...WEEK, account: gone.email },
    });
    expect(killed.status).toBe(401);
    entra.user = live;
    agent.signOutUpstream();
    await expect(session.client.callTool({ name: 'list_connections', arguments: {} })).rejects.toBeInstanceOf(UnauthorizedError);
    await finishAuthorization(session.transport, session.oauth, agent, gatehouse.url, 'entra');

    const seen = graph.requests.length;
    const merged = await call(session.client, 'microsoft_calendar_list_events', { ...WEEK, accounts: [live.email, gone.email] });
    expect(merged).toMatchObject({
      isError: true,
      text: `${gone.email}: This Microsoft connection needs reconnecting: sign in with Microsoft as it again, or leave it out of accounts.`,
    });
    expect(graph.requests.slice(seen)).toEqual([]); // neither account was read
    const alone = await ok(session.client, 'microsoft_calendar_list_events', { ...WEEK, account: live.email });
    expect(eventsOf(alone).map((event) => event.subject)).toEqual(['Live standup']);
    await session.client.close();
  });

  it("refuses hostile arguments with schema or permission errors, never a 5xx and never another user's data", async () => {
    const mallory = person('mallory');
    const victim = person('victim');
    graph.setEvents(victim.oid, [meeting('Victim secret', 4, 10)]);
    graph.setProfile(victim.oid, { jobTitle: 'Victim title' });
    const victimSession = await signIn(victim);
    const { connections } = (await ok(victimSession.client, 'list_connections')).data as { connections: { account: string }[] };
    const victimConnection = connections[0]?.account as string;
    await victimSession.client.close();
    const { client } = await signIn(mallory);

    const schema = /Input validation error/;
    const cases: [string, string, Record<string, unknown>, RegExp][] = [
      ['top as a string', 'microsoft_calendar_list_events', { top: '25' }, schema],
      ['top 0', 'microsoft_calendar_list_events', { top: 0 }, schema],
      ['top 101', 'microsoft_calendar_list_events', { top: 101 }, schema],
      ['top 2.5', 'microsoft_calendar_list_events', { top: 2.5 }, schema],
      ['a start that is not a date-time', 'microsoft_calendar_list_events', { start: 'yesterday' }, schema],
      ['a date-time without an offset', 'microsoft_calendar_list_events', { start: '2031-03-03T00:00:00' }, schema],
      ['a 100 000-character start', 'microsoft_calendar_list_events', { start: '9'.repeat(100_000) }, schema],
      ['a 10 000-character account', 'microsoft_profile', { account: 'a'.repeat(10_000) }, schema],
      ['an object as account', 'microsoft_profile', { account: { $ne: null } }, schema],
      ['accounts as a string', 'microsoft_calendar_list_events', { accounts: 'all' }, schema],
      ['no accounts', 'microsoft_calendar_list_events', { accounts: [] }, schema],
      ['eleven accounts', 'microsoft_calendar_list_events', { accounts: Array(11).fill(mallory.email) }, schema],
      ['a number in accounts', 'microsoft_calendar_list_events', { accounts: [123] }, schema],
      ['an end before the start', 'microsoft_calendar_list_events', { start: WEEK.end, end: WEEK.start }, /must be after start/],
      ['an end equal to the start', 'microsoft_calendar_list_events', { start: WEEK.start, end: WEEK.start }, /must be after start/],
      ['an end alone in the past', 'microsoft_calendar_list_events', { end: '2001-01-01T00:00:00Z' }, /must be after start/],
      ['32 days', 'microsoft_calendar_list_events', { start: at(1, 0), end: at(33, 0) }, /at most 31 days/],
      [
        'another user’s connection id',
        'microsoft_calendar_list_events',
        { account: victimConnection },
        /None of your connected Microsoft accounts/,
      ],
      ['another user’s connection id in accounts', 'microsoft_calendar_list_events', { accounts: [victimConnection] }, /None of your/],
      ['another user’s email', 'microsoft_profile', { account: victim.email }, /None of your connected Microsoft accounts/],
      ['another user’s oid', 'microsoft_profile', { account: victim.oid }, /None of your connected Microsoft accounts/],
    ];
    const before = { ...graph.calls };
    for (const [what, tool, args, message] of cases) {
      const answer = await call(client, tool, args);
      expect(answer.isError, what).toBe(true);
      expect(answer.text, what).toMatch(message);
      expect(answer.text, what).not.toContain('Victim');
      expect(answer.text.length, what).toBeLessThan(1000);
    }
    // None of them reached Graph.
    expect(graph.calls).toEqual(before);
    expect(requestsOf(victim.oid).filter((request) => request.path === '/v1.0/me/calendarView')).toHaveLength(0);

    // Unknown arguments are dropped: nothing names whose data to read but the bearer.
    const sneaky = await ok(client, 'microsoft_profile', { userId: victim.oid, upn: victim.email });
    expect(sneaky.data).toMatchObject({ id: mallory.oid, mail: mallory.email });
    expect(JSON.stringify(sneaky)).not.toContain('Victim');
    await client.close();
  });

  describe('upstream failures', () => {
    const user = person('failing');
    let client: Client;
    beforeAll(async () => {
      graph.setEvents(user.oid, [meeting('Planning', 4, 10)]);
      ({ client } = await signIn(user));
    });
    afterAll(async () => client?.close());

    it('a 401 from Graph gets one Entra refresh and one retry with the new token, then succeeds', async () => {
      const refreshes = entra.calls.token.refresh_token;
      const seen = graph.requests.length;
      graph.failNext('401');
      const answer = await ok(client, 'microsoft_calendar_list_events', WEEK);
      expect(eventsOf(answer).map((event) => event.subject)).toEqual(['Planning']);
      expect(entra.calls.token.refresh_token).toBe(refreshes + 1);
      const [rejected, retried, ...more] = graph.requests.slice(seen);
      expect(more).toHaveLength(0);
      expect(retried?.bearer).toMatch(/^CANARY-entra-at-/);
      expect(retried?.bearer).not.toBe(rejected?.bearer);
      expect(retried?.oid).toBe(user.oid);
    });

    it('a second 401 right after the refresh retires the grant: the MCP client gets 401, re-authorizes through Entra, and the call then works', async () => {
      const doomed = person('doomed');
      graph.setEvents(doomed.oid, [meeting('After reconnect', 4, 11)]);
      entra.user = doomed;
      const session = await connectThroughUpstream(gatehouse.url, 'entra', { oauth: new ReconnectingOAuthClient(SCOPE) });
      const refreshes = entra.calls.token.refresh_token;
      const seen = graph.requests.length;
      graph.failNext('401', 2);
      const { client, transport, oauth, agent } = session;
      await expect(client.callTool({ name: 'microsoft_calendar_list_events', arguments: WEEK })).rejects.toBeInstanceOf(UnauthorizedError);
      expect(entra.calls.token.refresh_token).toBe(refreshes + 1);
      expect(graph.requests.slice(seen)).toHaveLength(2);
      // Gatehouse revoked the client's grant with the upstream one: the SDK asks the user to sign in again.
      expect(oauth.authorizationUrl).toBeDefined();
      await finishAuthorization(transport, oauth, agent, gatehouse.url, 'entra');
      const answer = await ok(client, 'microsoft_calendar_list_events', WEEK);
      expect(eventsOf(answer).map((event) => event.subject)).toEqual(['After reconnect']);
      await client.close();
    });

    it('Graph answering slower than the upstream timeout is a retryable tool error, not a hang', async () => {
      graph.failNext('slow');
      const started = Date.now();
      const answer = await call(client, 'microsoft_profile');
      expect(answer).toMatchObject({ isError: true, text: 'Microsoft did not answer in time. Try again in a moment.' });
      expect(Date.now() - started).toBeLessThan(11_500);
    });

    for (const [status, message] of [
      ['403', /lacks permission.*reconnect/i],
      ['429', /rate-limiting.*Try again/],
      ['500', /having trouble \(500\)\. Try again/],
      ['garbage', /could not read\. Try again/],
    ] as const) {
      it(`${status} from Graph is a readable tool error (${message.source}), with no refresh and no upstream body`, async () => {
        const refreshes = entra.calls.token.refresh_token;
        graph.failNext(status);
        const answer = await call(client, 'microsoft_calendar_list_events', WEEK);
        expect(answer.isError).toBe(true);
        expect(answer.text).toMatch(message);
        expect(answer.text).not.toMatch(/ErrorAccessDenied|TooManyRequests|generalException|Wi-Fi|stack|at .*\.ts/);
        expect(entra.calls.token.refresh_token).toBe(refreshes);
        // The next call is fine again: nothing was lost.
        await ok(client, 'microsoft_profile');
      });
    }
  });

  it('never lets an upstream token reach the MCP client, the database file or the logs', async () => {
    const recorder = recordingFetch();
    const user = person('canary');
    graph.setEvents(user.oid, [meeting('Canary meeting', 4, 10)]);
    entra.user = user;
    const { client } = await connectThroughUpstreamWithFetch(gatehouse.url, 'entra', recorder.fetch, { oauth: scoped() });
    await ok(client, 'microsoft_profile');
    graph.failNext('401');
    await ok(client, 'microsoft_calendar_list_events', WEEK);
    graph.failNext('500');
    await call(client, 'microsoft_calendar_list_events', WEEK);
    await client.close();
    await recorder.settled();

    const canaries = [...entra.issuedTokens(), ...graph.requests.map((request) => request.bearer)];
    expect(canaries.length).toBeGreaterThan(10);
    const places = {
      'responses to the MCP client': recorder.responses.map((response) => `${response.headers}\n${response.body}`).join('\n'),
      'the database file': databaseBytes(gatehouse.databasePath),
      'the logs': gatehouse.logs.join('\n'),
    };
    expect(places['responses to the MCP client']).toContain('Canary meeting');
    for (const [place, text] of Object.entries(places)) {
      for (const canary of canaries) expect(text.includes(canary), `${canary.slice(0, 20)}… in ${place}`).toBe(false);
      expect(text, place).not.toContain('CANARY-');
    }
  });
});

describe('Microsoft tools when Entra did not grant Calendars.Read (ENTRA_SCOPES=User.Read)', () => {
  let entra: FakeOidc;
  let graph: FakeGraph;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    entra = await startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret });
    graph = await startFakeGraph({ issuer: entra.issuer });
    gatehouse = await startGatehouse({ ...federationEnv({ entra }), GRAPH_API_URL: graph.url, ENTRA_SCOPES: 'User.Read' });
  });
  afterAll(async () => {
    await gatehouse?.close();
    await Promise.all([graph?.close(), entra?.close()]);
  });

  it('says clearly that calendar access was not granted and how to get it, without calling Graph; the profile still works', async () => {
    const user = person('nocal');
    entra.user = user;
    const { client } = await connectThroughUpstream(gatehouse.url, 'entra', { oauth: scoped() });
    expect(entra.lastAuthorizationParams?.get('scope')?.split(' ')).not.toContain('Calendars.Read');

    const answer = await call(client, 'microsoft_calendar_list_events', WEEK);
    expect(answer.isError).toBe(true);
    expect(answer.text).toContain(
      `Your Microsoft account ${user.email} has not granted Gatehouse access to its calendar (Calendars.Read).`,
    );
    expect(answer.text).toMatch(/Reconnect it and grant calendar access/);
    expect(answer.text).toMatch(/ENTRA_SCOPES/);
    expect(graph.calls.calendarView).toBe(0);

    expect((await ok(client, 'microsoft_profile')).data).toMatchObject({ mail: user.email, id: user.oid });
    await client.close();
  });
});
