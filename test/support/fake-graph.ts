import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** How the next Graph call fails, after its bearer was checked: Graph's error shapes, a non-JSON body, or a late answer. */
export type GraphFailure = '401' | '403' | '429' | '500' | 'garbage' | 'slow';

/** An event as a test sets it: UTC ISO times; Graph's shape is made from it. */
export interface FakeGraphEvent {
  subject: string;
  start: string;
  end: string;
  isAllDay?: boolean;
  location?: string;
  organizer?: { name: string; address: string };
}

export interface GraphProfile {
  id: string;
  displayName: string | null;
  mail: string | null;
  userPrincipalName: string | null;
  jobTitle: string | null;
  officeLocation: string | null;
  preferredLanguage: string | null;
}

/** One request the fake answered for an authenticated user. */
export interface GraphRequest {
  path: string;
  query: URLSearchParams;
  /** The whole bearer token as received (a canary of the Entra fake). */
  bearer: string;
  /** The `oid` the Entra fake's userinfo said the bearer belongs to. */
  oid: string;
  prefer: string | undefined;
  userAgent: string | undefined;
}

export interface FakeGraph {
  /** The origin to set as GRAPH_API_URL; paths are `/v1.0/...`. */
  url: string;
  /** Overrides parts of a user's profile (by Entra `oid`); the rest comes from the userinfo claims. */
  setProfile(oid: string, profile: Partial<GraphProfile>): void;
  /** The events of a user's calendar (by Entra `oid`). */
  setEvents(oid: string, events: FakeGraphEvent[]): void;
  calls: { me: number; calendarView: number; unauthenticated: number };
  /** Every authenticated request: which bearer served which user. */
  requests: GraphRequest[];
  /** Makes the next `times` authenticated calls fail as `mode`. */
  failNext(mode: GraphFailure, times?: number): void;
  close(): Promise<void>;
}

/**
 * A fake Microsoft Graph (`/v1.0/me`, `/v1.0/me/calendarView`) on 127.0.0.1. Like a real resource
 * server it authenticates every bearer, here by asking the Entra fake's userinfo endpoint (found via
 * discovery), and serves the data of the user that endpoint names, honouring the calendarView window,
 * `$top`, `$select` and `Prefer: outlook.timezone`.
 */
export async function startFakeGraph(options: { issuer: string; slowMs?: number }): Promise<FakeGraph> {
  const slowMs = options.slowMs ?? 15_000;
  const profiles = new Map<string, Partial<GraphProfile>>();
  const calendars = new Map<string, FakeGraphEvent[]>();
  const failures: GraphFailure[] = [];
  const timers = new Set<NodeJS.Timeout>();
  let userinfoEndpoint: Promise<string> | undefined;

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) graphError(res, 500, 'generalException', (error as Error).message);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));

  const fake: FakeGraph = {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    setProfile: (oid, profile) => profiles.set(oid, { ...profiles.get(oid), ...profile }),
    setEvents: (oid, events) => calendars.set(oid, events),
    calls: { me: 0, calendarView: 0, unauthenticated: 0 },
    requests: [],
    failNext: (mode, times = 1) => failures.push(...Array<GraphFailure>(times).fill(mode)),
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };

  /** Who the bearer belongs to, as the IdP says (userinfo), or undefined when the IdP does not accept it. */
  async function authenticate(bearer: string): Promise<Record<string, unknown> | undefined> {
    userinfoEndpoint ??= fetch(`${options.issuer}/.well-known/openid-configuration`)
      .then((response) => response.json() as Promise<{ userinfo_endpoint: string }>)
      .then((discovery) => discovery.userinfo_endpoint);
    const response = await fetch(await userinfoEndpoint, { headers: { authorization: `Bearer ${bearer}` } });
    if (!response.ok) return undefined;
    return (await response.json()) as Record<string, unknown>;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', fake.url);
    const route = url.pathname === '/v1.0/me' ? 'me' : url.pathname === '/v1.0/me/calendarView' ? 'calendarView' : undefined;
    if (!route || req.method !== 'GET') return graphError(res, 404, 'Request_ResourceNotFound', 'Resource not found.');
    fake.calls[route]++;

    const bearer = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '')?.[1];
    const claims = bearer ? await authenticate(bearer) : undefined;
    if (!bearer || typeof claims?.oid !== 'string') {
      fake.calls.unauthenticated++;
      res.setHeader('www-authenticate', 'Bearer realm="", error="invalid_token"');
      return graphError(res, 401, 'InvalidAuthenticationToken', 'Access token is empty or invalid.');
    }
    const oid = claims.oid;
    const prefer = String(req.headers.prefer ?? '') || undefined;
    fake.requests.push({
      path: url.pathname,
      query: url.searchParams,
      bearer,
      oid,
      prefer,
      userAgent: req.headers['user-agent'],
    });

    const failure = failures.shift();
    if (failure === 'slow') {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          timers.delete(timer);
          resolve();
        }, slowMs);
        timers.add(timer);
      });
      if (req.socket.destroyed) return;
    } else if (failure === 'garbage') return send(res, 200, '<html><body>Sign in to the Wi-Fi</body></html>');
    else if (failure === '401')
      return graphError(res, 401, 'InvalidAuthenticationToken', 'Lifetime validation failed, the token is expired.');
    else if (failure === '403') return graphError(res, 403, 'ErrorAccessDenied', 'Access is denied. Check credentials and try again.');
    else if (failure === '429') {
      res.setHeader('retry-after', '7');
      return graphError(res, 429, 'TooManyRequests', 'Too many requests.');
    } else if (failure === '500') return graphError(res, 500, 'generalException', 'An unexpected error occurred.');

    if (route === 'me') return send(res, 200, JSON.stringify(profileOf(oid, claims, url.searchParams.get('$select'))));
    calendarView(res, oid, url.searchParams, prefer);
  }

  function profileOf(oid: string, claims: Record<string, unknown>, select: string | null): Record<string, unknown> {
    const text = (value: unknown) => (typeof value === 'string' ? value : null);
    const profile: GraphProfile = {
      id: oid,
      displayName: text(claims.name),
      mail: text(claims.email),
      userPrincipalName: text(claims.preferred_username),
      jobTitle: null,
      officeLocation: null,
      preferredLanguage: null,
      ...profiles.get(oid),
    };
    const fields = select ? select.split(',') : Object.keys(profile);
    const chosen = Object.entries(profile).filter(([field]) => fields.includes(field));
    return { '@odata.context': `${fake.url}/v1.0/$metadata#users/$entity`, ...Object.fromEntries(chosen) };
  }

  function calendarView(res: ServerResponse, oid: string, query: URLSearchParams, prefer: string | undefined): void {
    const start = Date.parse(query.get('startDateTime') ?? '');
    const end = Date.parse(query.get('endDateTime') ?? '');
    if (Number.isNaN(start) || Number.isNaN(end)) {
      graphError(
        res,
        400,
        'ErrorInvalidParameter',
        'This request requires a time window specified by the query string parameters StartDateTime and EndDateTime.',
      );
      return;
    }
    const top = Math.min(Number(query.get('$top') ?? 10) || 10, 1000);
    // calendarView: every event that overlaps the window, earliest first.
    const overlapping = (calendars.get(oid) ?? [])
      .filter((event) => Date.parse(event.start) < end && Date.parse(event.end) > start)
      .sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    const utc = /outlook\.timezone="UTC"/.test(prefer ?? '');
    const time = (iso: string) =>
      utc
        ? { dateTime: new Date(iso).toISOString().replace(/\.\d+Z$/, '.0000000'), timeZone: 'UTC' }
        : {
            dateTime: new Date(Date.parse(iso) - 8 * 3600_000).toISOString().replace(/\.\d+Z$/, '.0000000'),
            timeZone: 'Pacific Standard Time',
          };
    const value = overlapping.slice(0, top).map((event, index) => ({
      id: `AAMk-${oid.slice(0, 8)}-${index}`,
      subject: event.subject,
      start: time(event.start),
      end: time(event.end),
      isAllDay: event.isAllDay ?? false,
      location: { displayName: event.location ?? '' },
      organizer: event.organizer ? { emailAddress: event.organizer } : undefined,
      webLink: `https://outlook.office365.com/owa/?itemid=AAMk-${oid.slice(0, 8)}-${index}`,
    }));
    const page: Record<string, unknown> = { '@odata.context': `${fake.url}/v1.0/$metadata#Collection(event)`, value };
    if (overlapping.length > top) {
      const next = new URLSearchParams(query);
      next.set('$skip', String(top));
      page['@odata.nextLink'] = `${fake.url}/v1.0/me/calendarView?${next}`;
    }
    send(res, 200, JSON.stringify(page));
  }

  return fake;
}

function send(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
  res.end(body);
}

/** Graph's error body: `{ error: { code, message, innerError } }`. */
function graphError(res: ServerResponse, status: number, code: string, message: string): void {
  send(
    res,
    status,
    JSON.stringify({ error: { code, message, innerError: { date: new Date().toISOString(), 'request-id': crypto.randomUUID() } } }),
  );
}
