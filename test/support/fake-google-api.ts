import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A calendar as `calendarList` lists it. Extra fields are served as given. */
export interface FakeCalendar {
  id: string;
  summary: string;
  primary?: boolean;
  accessRole?: string;
  timeZone?: string;
  description?: string;
  [field: string]: unknown;
}

/** An event as `events.list` serves it: `start`/`end` carry `dateTime` (RFC 3339) or `date` (all-day). */
export interface FakeEvent {
  id: string;
  summary?: string;
  description?: string;
  location?: string;
  start: { dateTime: string } | { date: string };
  end: { dateTime: string } | { date: string };
  [field: string]: unknown;
}

/**
 * `401` refuses the token whatever it is; `403` is Google's insufficient-scope refusal; `429` its rate
 * limit; `500` an HTML error page; `garbage` a 200 labelled JSON that is not; `slow` answers after `slowMs`.
 */
export type FakeGoogleApiFailure = '401' | '403' | '429' | '500' | 'garbage' | 'slow';

/** One authenticated call: the bearer it carried and whose the fake IdP said it was. */
export interface FakeGoogleApiCall {
  path: string;
  query: URLSearchParams;
  bearer: string;
  sub: string;
  email: string | undefined;
  userAgent: string;
}

export interface FakeGoogleApi {
  /** `GOOGLE_API_URL`: `http://127.0.0.1:<port>`. */
  url: string;
  calls: { calendarList: number; events: number; refused: number };
  /** Every call the fake served, in order (for "whose canary reached the API" checks). */
  served: FakeGoogleApiCall[];
  /** The calendars of a user, by email or `sub`; without, a user has one primary calendar named by their email. */
  setCalendars(user: string, calendars: FakeCalendar[]): void;
  /** The events of one of a user's calendars (`primary` means their primary one). */
  setEvents(user: string, calendarId: string, events: FakeEvent[]): void;
  /** Makes the next `times` calls fail as `mode` (they are still counted). */
  failNext(mode: FakeGoogleApiFailure, times?: number): void;
  close(): Promise<void>;
}

interface UserInfo {
  sub: string;
  email?: string;
}

/**
 * Starts a fake of the Google Calendar API v3 endpoints the tools call, on 127.0.0.1. It authenticates
 * each bearer as a resource server would, by asking the fake Google's userinfo endpoint whose token it
 * is, and serves that user's own calendars and events only, honouring timeMin, timeMax, maxResults and q.
 */
export async function startFakeGoogleApi(options: { issuer: string; slowMs?: number }): Promise<FakeGoogleApi> {
  const slowMs = options.slowMs ?? 12_000;
  const calendars = new Map<string, FakeCalendar[]>();
  const events = new Map<string, FakeEvent[]>();
  const failures: FakeGoogleApiFailure[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let userinfoEndpoint: Promise<string> | undefined;

  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const fake: FakeGoogleApi = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls: { calendarList: 0, events: 0, refused: 0 },
    served: [],
    setCalendars: (user, list) => calendars.set(user, list),
    setEvents: (user, calendarId, list) => events.set(`${user}\0${calendarId}`, list),
    failNext: (mode, times = 1) => failures.push(...Array<FakeGoogleApiFailure>(times).fill(mode)),
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };

  /** Who the bearer belongs to, as the IdP says (undefined: not a live token). */
  async function authenticate(bearer: string): Promise<UserInfo | undefined> {
    userinfoEndpoint ??= fetch(`${options.issuer}/.well-known/openid-configuration`)
      .then((response) => response.json() as Promise<{ userinfo_endpoint: string }>)
      .then((discovery) => discovery.userinfo_endpoint);
    const response = await fetch(await userinfoEndpoint, { headers: { authorization: `Bearer ${bearer}` } });
    if (!response.ok) return undefined;
    const info = (await response.json()) as Partial<UserInfo>;
    return typeof info.sub === 'string' ? { sub: info.sub, ...(info.email ? { email: info.email } : {}) } : undefined;
  }

  const calendarsOf = (user: UserInfo): FakeCalendar[] =>
    calendars.get(user.sub) ??
    calendars.get(user.email ?? '') ?? [
      { id: user.email ?? user.sub, summary: user.email ?? user.sub, primary: true, accessRole: 'owner' },
    ];

  function eventsOf(user: UserInfo, calendarId: string): FakeEvent[] | undefined {
    const own = calendarsOf(user);
    const calendar = calendarId === 'primary' ? own.find((c) => c.primary) : own.find((c) => c.id === calendarId);
    if (!calendar) return undefined;
    const keys = [user.sub, user.email ?? ''].flatMap((who) => [
      `${who}\0${calendar.id}`,
      ...(calendar.primary ? [`${who}\0primary`] : []),
    ]);
    for (const key of keys) if (events.has(key)) return events.get(key);
    return [];
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', fake.url);
    const list = url.pathname === '/calendar/v3/users/me/calendarList';
    const eventsPath = /^\/calendar\/v3\/calendars\/([^/]+)\/events$/.exec(url.pathname);
    if (req.method !== 'GET' || (!list && !eventsPath)) return error(res, 404, 'notFound', 'Not Found');
    if (list) fake.calls.calendarList++;
    else fake.calls.events++;

    const failure = failures.shift();
    if (failure === 'slow') {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => resolve(void timers.delete(timer)), slowMs);
        timers.add(timer);
      });
      if (req.socket.destroyed) return;
    } else if (failure === '401') return refuse(res);
    else if (failure === '403') return error(res, 403, 'insufficientPermissions', 'Request had insufficient authentication scopes.');
    else if (failure === '429') return error(res, 429, 'rateLimitExceeded', 'Rate Limit Exceeded');
    else if (failure === '500') return send(res, 500, 'text/html', '<!doctype html><title>Error 500</title><p>Server Error</p>');
    else if (failure === 'garbage') return send(res, 200, 'application/json', '<html><body>Sign in to the Wi-Fi</body></html>');

    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    const user = bearer ? await authenticate(bearer) : undefined;
    if (!bearer || !user) return refuse(res);
    fake.served.push({
      path: url.pathname,
      query: url.searchParams,
      bearer,
      ...user,
      email: user.email,
      userAgent: req.headers['user-agent'] ?? '',
    });

    if (list) return json(res, { kind: 'calendar#calendarList', items: calendarsOf(user) });
    const calendarId = decodeURIComponent(eventsPath?.[1] ?? '');
    const all = eventsOf(user, calendarId);
    if (!all) return error(res, 404, 'notFound', 'Not Found');
    const query = url.searchParams;
    const bound = (name: string): number | undefined | null => {
      const value = query.get(name);
      if (value === null) return undefined;
      // Google wants RFC 3339 with an offset here.
      return /(Z|[+-]\d\d:\d\d)$/.test(value) && !Number.isNaN(Date.parse(value)) ? Date.parse(value) : null;
    };
    const [timeMin, timeMax] = [bound('timeMin'), bound('timeMax')];
    const maxResults = Number(query.get('maxResults') ?? 250);
    if (timeMin === null || timeMax === null || !Number.isInteger(maxResults) || maxResults < 1)
      return error(res, 400, 'badRequest', 'Bad Request');
    const q = query.get('q')?.toLowerCase();
    const time = (at: FakeEvent['start']) => Date.parse('dateTime' in at ? at.dateTime : at.date);
    const matching = all
      .filter((event) => timeMin === undefined || time(event.end) > timeMin) // timeMin bounds the end (exclusive)
      .filter((event) => timeMax === undefined || time(event.start) < timeMax) // timeMax bounds the start (exclusive)
      .filter((event) => !q || [event.summary, event.description, event.location].some((field) => field?.toLowerCase().includes(q)))
      .sort((a, b) => time(a.start) - time(b.start));
    const items = matching.slice(0, maxResults);
    return json(res, {
      kind: 'calendar#events',
      summary: calendarId,
      items,
      ...(matching.length > items.length ? { nextPageToken: `page-${items.length}` } : {}),
    });
  }

  function refuse(res: ServerResponse): void {
    fake.calls.refused++;
    res.setHeader('www-authenticate', 'Bearer realm="https://accounts.google.com/", error="invalid_token"');
    error(res, 401, 'authError', 'Request had invalid authentication credentials.');
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((cause: unknown) => {
      if (!res.headersSent) send(res, 500, 'text/plain', (cause as Error).message);
    });
  });
  return fake;
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' });
  res.end(body);
}

const json = (res: ServerResponse, body: unknown): void => send(res, 200, 'application/json', JSON.stringify(body));

/** Google's error body: `{ error: { code, message, errors: [{ reason }] } }`. */
function error(res: ServerResponse, status: number, reason: string, message: string): void {
  send(
    res,
    status,
    'application/json',
    JSON.stringify({ error: { code: status, message, errors: [{ domain: 'global', reason, message }] } }),
  );
}
