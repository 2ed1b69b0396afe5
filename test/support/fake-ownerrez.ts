import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

export interface FakeOwnerRezUser {
  id: number;
  email: string;
  firstName: string;
  lastName: string;
}

/** `properties`, `bookings` and `booking` are the v2 API the tools read: list properties, list bookings, one booking. */
export type FakeOwnerRezEndpoint = 'token' | 'usersMe' | 'revoke' | 'properties' | 'bookings' | 'booking';
/**
 * `down` destroys the socket, `slow` answers after `slowMs`, `500` is an HTML error page, `garbage`
 * a 200 that is not JSON, `invalid_grant` a 400 OAuth error, `forbidden` and `403` OwnerRez's 403
 * `ip_blocked`, `401` a refused token (whatever was sent), `429` its rate limit; `wrong_user_id`
 * (token only) answers normally but names another user in `user_id`.
 */
export type FakeOwnerRezFailure =
  | 'down'
  | 'slow'
  | '500'
  | 'garbage'
  | 'invalid_grant'
  | 'forbidden'
  | 'wrong_user_id'
  | '401'
  | '403'
  | '429';

/**
 * A property as `GET /v2/properties` lists it (snake_case, as on the wire). Extra fields are served as
 * given, so tests can check what the tools leave out.
 */
export interface FakeOwnerRezProperty {
  id: number;
  name: string;
  active: boolean;
  [field: string]: unknown;
}

/**
 * A booking as `GET /v2/bookings` serves it. `guest` (with contact details) is sent only when the
 * request asks `include_guest=true`, as OwnerRez does; `updated_utc` is what `since_utc` filters on.
 */
export interface FakeOwnerRezBooking {
  id: number;
  property_id: number;
  arrival: string;
  departure: string;
  status: 'active' | 'canceled' | 'pending';
  updated_utc: string;
  guest?: Record<string, unknown>;
  [field: string]: unknown;
}

/** What one user's OwnerRez account holds. */
export interface FakeOwnerRezData {
  properties: FakeOwnerRezProperty[];
  bookings: FakeOwnerRezBooking[];
}

/** One call of the bearer API: the token it carried and whose it was (undefined: not a live token). */
export interface FakeApiCall {
  endpoint: FakeOwnerRezEndpoint;
  token: string | undefined;
  userId: number | undefined;
  userAgent: string;
  url: URL;
}

export interface FakeOwnerRezOptions {
  clientId: string;
  clientSecret: string;
  /** Sent as `expires_in` and enforced; absent → tokens never expire and the response has no expires_in. */
  expiresIn?: number | undefined;
  /** Whether the code exchange must repeat `redirect_uri`, must not, or may (then it must match). Default optional. */
  redirectUriOnExchange?: 'required' | 'forbidden' | 'optional';
  /** How long `slow` waits before answering (default 5 s). */
  slowMs?: number;
  /** The most items one page of a list holds, whatever `limit` asks (default 100). */
  maxPageSize?: number;
}

export interface FakeTokenRequest {
  authorization: string | undefined;
  form: Record<string, string>;
}

export interface FakeOwnerRez {
  /** Origin: serves both the authorize page and the API (OWNERREZ_API_URL). */
  url: string;
  /** `${url}/oauth/authorize` (OWNERREZ_AUTHORIZE_URL). */
  authorizeUrl: string;
  /** Who the next login is; assigning a user with a known id updates that user's profile. */
  user: FakeOwnerRezUser;
  readonly calls: Record<'authorize' | FakeOwnerRezEndpoint, number>;
  /** The User-Agent of every API call (token, users/me, revoke, v2 data), `''` where none was sent. */
  readonly userAgents: string[];
  /** Every bearer call (users/me and the v2 data endpoints): which token served which user. */
  readonly apiCalls: FakeApiCall[];
  /** Where `next_page_url` points (default: this fake's own origin); tests aim it elsewhere to see it is not followed. */
  nextPageOrigin: string;
  /** Replaces what the OwnerRez account of user `userId` holds. */
  setData(userId: number, data: Partial<FakeOwnerRezData>): void;
  readonly lastTokenRequest: FakeTokenRequest | undefined;
  failNext(endpoint: FakeOwnerRezEndpoint, mode: FakeOwnerRezFailure, times?: number): void;
  revokeToken(token: string): void;
  revokeAll(): void;
  issuedTokens(): string[];
  close(): Promise<void>;
}

const CODE_TTL_MS = 10 * 60_000; // OwnerRez: temporary codes expire after 10 minutes.

interface IssuedCode {
  userId: number;
  redirectUri: string;
  expiresAt: number;
}

interface IssuedToken {
  userId: number;
  expiresAt: number | undefined;
  revoked: boolean;
}

/**
 * A small HTTP fake of OwnerRez on 127.0.0.1 speaking its OAuth app flow: an auto-approving
 * authorize redirect, the Basic-authenticated code exchange (raw `client_id:client_secret`, as
 * OwnerRez compares them), `/v2/users/me` (which refuses calls without a User-Agent) and token
 * revocation by DELETE. Access tokens are canary strings so tests can grep for leaks.
 */
export async function startFakeOwnerRez(options: FakeOwnerRezOptions): Promise<FakeOwnerRez> {
  const expectedBasic = `Basic ${Buffer.from(`${options.clientId}:${options.clientSecret}`, 'utf8').toString('base64')}`;
  const redirectRule = options.redirectUriOnExchange ?? 'optional';
  const slowMs = options.slowMs ?? 5000;
  const users = new Map<number, FakeOwnerRezUser>();
  const codes = new Map<string, IssuedCode>();
  const tokens = new Map<string, IssuedToken>();
  const maxPageSize = options.maxPageSize ?? 100;
  const failures: Record<FakeOwnerRezEndpoint, FakeOwnerRezFailure[]> = {
    token: [],
    usersMe: [],
    revoke: [],
    properties: [],
    bookings: [],
    booking: [],
  };
  const timers = new Set<NodeJS.Timeout>();
  const calls = { authorize: 0, token: 0, usersMe: 0, revoke: 0, properties: 0, bookings: 0, booking: 0 };
  const userAgents: string[] = [];
  const apiCalls: FakeApiCall[] = [];
  const accountData = new Map<number, FakeOwnerRezData>();
  let current: FakeOwnerRezUser = { id: 1001, email: 'host@example.com', firstName: 'Hana', lastName: 'Host' };
  users.set(current.id, current);
  let lastTokenRequest: FakeTokenRequest | undefined;

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake');
    if (req.method === 'GET' && url.pathname === '/oauth/authorize') return authorize(url, res);
    if (req.method === 'POST' && url.pathname === '/oauth/access_token')
      return api('token', req, res, (mode) => void token(req, res, mode).catch(() => req.socket.destroy()));
    if (req.method === 'GET' && url.pathname === '/v2/users/me') return api('usersMe', req, res, () => usersMe(req, res));
    if (req.method === 'GET' && url.pathname === '/v2/properties') return api('properties', req, res, () => listProperties(req, res, url));
    if (req.method === 'GET' && url.pathname === '/v2/bookings') return api('bookings', req, res, () => listBookings(req, res, url));
    if (req.method === 'GET' && url.pathname.startsWith('/v2/bookings/')) return api('booking', req, res, () => getBooking(req, res, url));
    if (req.method === 'DELETE' && url.pathname.startsWith('/oauth/access_token/')) {
      return api('revoke', req, res, () => revoke(req, res, decodeURIComponent(url.pathname.slice('/oauth/access_token/'.length))));
    }
    json(res, 404, { error: 'not_found' });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (!address || typeof address === 'string') throw new Error('fake OwnerRez did not get a port');
  const origin = `http://127.0.0.1:${address.port}`;
  let nextPageOrigin = origin;

  function authorize(url: URL, res: ServerResponse): void {
    calls.authorize += 1;
    const redirectUri = url.searchParams.get('redirect_uri');
    if (url.searchParams.get('client_id') !== options.clientId || !redirectUri || url.searchParams.get('response_type') !== 'code') {
      res.writeHead(400, { 'content-type': 'text/html' }).end('<h1>Invalid authorization request</h1>');
      return;
    }
    const code = `tc_${randomBytes(16).toString('hex')}`;
    codes.set(code, { userId: current.id, redirectUri, expiresAt: Date.now() + CODE_TTL_MS });
    const target = new URL(redirectUri);
    target.searchParams.set('code', code);
    const state = url.searchParams.get('state');
    if (state !== null) target.searchParams.set('state', state);
    res.writeHead(302, { location: target.href, 'cache-control': 'no-store' }).end();
  }

  /** Counts the call, records its User-Agent, then plays the queued failure or hands over to `handle`. */
  function api(
    endpoint: FakeOwnerRezEndpoint,
    req: IncomingMessage,
    res: ServerResponse,
    handle: (mode: FakeOwnerRezFailure | undefined) => void,
  ): void {
    calls[endpoint] += 1;
    userAgents.push(req.headers['user-agent'] ?? '');
    if (endpoint !== 'token' && endpoint !== 'revoke') {
      const token = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
      const url = new URL(req.url ?? '/', origin);
      apiCalls.push({
        endpoint,
        token,
        userId: liveToken(req.headers.authorization)?.userId,
        userAgent: req.headers['user-agent'] ?? '',
        url,
      });
    }
    const mode = failures[endpoint].shift();
    if (mode === 'down') return void req.socket.destroy();
    if (mode === '500') return void res.writeHead(500, { 'content-type': 'text/html' }).end('<h1>Server Error</h1>');
    if (mode === 'garbage') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>maintenance</html>');
    if (mode === 'invalid_grant') return void json(res, 400, { error: 'invalid_grant' });
    if (mode === 'forbidden' || mode === '403') return void json(res, 403, { error: 'ip_blocked' });
    if (mode === '401') return void json(res, 401, { error: 'unauthorized' });
    if (mode === '429')
      return void res.writeHead(429, { 'retry-after': '60', 'content-type': 'application/json' }).end('{"error":"rate_limited"}');
    // Like the real API: a client that does not name itself is refused before anything else.
    const proceed = () => (req.headers['user-agent'] ? handle(mode) : json(res, 403, { error: 'user_agent_required' }));
    if (mode !== 'slow') return void proceed();
    const timer = setTimeout(() => {
      timers.delete(timer);
      proceed();
    }, slowMs);
    timers.add(timer);
  }

  async function token(req: IncomingMessage, res: ServerResponse, mode: FakeOwnerRezFailure | undefined): Promise<void> {
    const form = Object.fromEntries(new URLSearchParams(await readBody(req)));
    lastTokenRequest = { authorization: req.headers.authorization, form };
    if (req.headers.authorization !== expectedBasic) return void json(res, 401, { error: 'invalid_client' });
    if (form.grant_type !== 'authorization_code') return void json(res, 400, { error: 'unsupported_grant_type' });
    const issued = form.code === undefined ? undefined : codes.get(form.code);
    if (form.code !== undefined) codes.delete(form.code);
    if (!issued || issued.expiresAt <= Date.now()) return void json(res, 400, { error: 'invalid_grant' });
    const sent = form.redirect_uri;
    if (redirectRule === 'required' && sent === undefined) return void json(res, 400, { error: 'invalid_request' });
    if (redirectRule === 'forbidden' && sent !== undefined) return void json(res, 400, { error: 'invalid_request' });
    if (sent !== undefined && sent !== issued.redirectUri) return void json(res, 400, { error: 'invalid_grant' });

    const accessToken = `CANARY-ownerrez-at-${randomBytes(18).toString('base64url')}`;
    const expiresAt = options.expiresIn === undefined ? undefined : Date.now() + options.expiresIn * 1000;
    tokens.set(accessToken, { userId: issued.userId, expiresAt, revoked: false });
    json(res, 200, {
      access_token: accessToken,
      token_type: 'bearer',
      user_id: mode === 'wrong_user_id' ? issued.userId + 1 : issued.userId,
      ...(options.expiresIn === undefined ? {} : { expires_in: options.expiresIn }),
    });
  }

  function usersMe(req: IncomingMessage, res: ServerResponse): void {
    const issued = liveToken(req.headers.authorization);
    const user = issued && users.get(issued.userId);
    if (!user) return void json(res, 401, { error: 'unauthorized' });
    json(res, 200, { id: user.id, email_address: user.email, first_name: user.firstName, last_name: user.lastName });
  }

  /** The data of the user whose live token the request carries, or undefined after answering 401. */
  function dataOf(req: IncomingMessage, res: ServerResponse): FakeOwnerRezData | undefined {
    const issued = liveToken(req.headers.authorization);
    if (!issued) return void json(res, 401, { error: 'unauthorized' });
    return accountData.get(issued.userId) ?? { properties: [], bookings: [] };
  }

  function listProperties(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const data = dataOf(req, res);
    if (!data) return;
    const active = url.searchParams.get('active');
    const properties = data.properties.filter((property) => active === null || String(property.active) === active);
    page(res, url, properties);
  }

  /** Like OwnerRez: either property_ids or since_utc; `from`/`to` keep stays departing on/after and arriving on/before. */
  function listBookings(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const data = dataOf(req, res);
    if (!data) return;
    const query = url.searchParams;
    const propertyIds = query.get('property_ids');
    const since = query.get('since_utc');
    if (propertyIds === null && since === null) return void json(res, 400, { messages: ['Either property_ids or since_utc is required.'] });
    const ids = propertyIds?.split(',').map(Number);
    if (ids?.some((id) => !Number.isSafeInteger(id) || id <= 0)) return void json(res, 400, { messages: ['property_ids is invalid.'] });
    if ([since, query.get('from'), query.get('to')].some((date) => date !== null && Number.isNaN(Date.parse(date))))
      return void json(res, 400, { messages: ['A date is invalid.'] });
    const status = query.get('status');
    const from = query.get('from');
    const to = query.get('to');
    const bookings = data.bookings.filter(
      (booking) =>
        (!ids || ids.includes(booking.property_id)) &&
        (since === null || Date.parse(booking.updated_utc) >= Date.parse(since)) &&
        (status === null || booking.status === status) &&
        (from === null || booking.departure >= from.slice(0, 10)) &&
        (to === null || booking.arrival <= to.slice(0, 10)),
    );
    page(
      res,
      url,
      bookings.map((booking) => withGuest(booking, query)),
    );
  }

  function getBooking(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const data = dataOf(req, res);
    if (!data) return;
    // Someone else's booking is as absent as one that never existed.
    const booking = data.bookings.find((candidate) => String(candidate.id) === url.pathname.slice('/v2/bookings/'.length));
    if (!booking) return void json(res, 404, { messages: ['Booking not found.'] });
    json(res, 200, withGuest(booking, url.searchParams));
  }

  function withGuest(booking: FakeOwnerRezBooking, query: URLSearchParams): FakeOwnerRezBooking {
    if (query.get('include_guest') === 'true') return booking;
    const { guest: _guest, ...rest } = booking;
    return rest;
  }

  /** OwnerRez's pageable list: `items`, `count`, `limit`, `offset` and an absolute `next_page_url` (or null). */
  function page(res: ServerResponse, url: URL, all: unknown[]): void {
    const limit = Math.min(Number(url.searchParams.get('limit') ?? maxPageSize) || maxPageSize, maxPageSize);
    const offset = Math.max(Number(url.searchParams.get('offset') ?? 0) || 0, 0);
    const items = all.slice(offset, offset + limit);
    let next: string | null = null;
    if (offset + items.length < all.length) {
      const nextUrl = new URL(`${url.pathname}${url.search}`, nextPageOrigin);
      nextUrl.searchParams.set('offset', String(offset + items.length));
      next = nextUrl.href;
    }
    json(res, 200, { items, count: all.length, limit, offset, next_page_url: next });
  }

  function revoke(req: IncomingMessage, res: ServerResponse, accessToken: string): void {
    if (req.headers.authorization !== expectedBasic) return void json(res, 401, { error: 'invalid_client' });
    const issued = tokens.get(accessToken);
    if (!issued || issued.revoked) return void json(res, 404, { error: 'not_found' });
    issued.revoked = true;
    res.writeHead(204).end();
  }

  function liveToken(authorization: string | undefined): IssuedToken | undefined {
    const match = /^Bearer (.+)$/i.exec(authorization ?? '');
    const issued = match?.[1] ? tokens.get(match[1]) : undefined;
    if (!issued || issued.revoked || (issued.expiresAt !== undefined && issued.expiresAt <= Date.now())) return undefined;
    return issued;
  }

  return {
    url: origin,
    authorizeUrl: `${origin}/oauth/authorize`,
    get user() {
      return current;
    },
    set user(user: FakeOwnerRezUser) {
      current = { ...user };
      users.set(current.id, current);
    },
    calls,
    userAgents,
    apiCalls,
    get nextPageOrigin() {
      return nextPageOrigin;
    },
    set nextPageOrigin(value: string) {
      nextPageOrigin = value;
    },
    setData(userId, data) {
      const before = accountData.get(userId) ?? { properties: [], bookings: [] };
      accountData.set(userId, { ...before, ...data });
    },
    get lastTokenRequest() {
      return lastTokenRequest;
    },
    failNext(endpoint, mode, times = 1) {
      for (let i = 0; i < times; i += 1) failures[endpoint].push(mode);
    },
    revokeToken(accessToken) {
      const issued = tokens.get(accessToken);
      if (issued) issued.revoked = true;
    },
    revokeAll() {
      for (const issued of tokens.values()) issued.revoked = true;
    },
    issuedTokens: () => [...tokens.keys()],
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
