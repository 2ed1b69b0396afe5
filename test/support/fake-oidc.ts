import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { answer, fail, oauthError, readBody, replayWithBody, setUrl } from './fake-oidc/edge.ts';
import { type FakeUser, generateSigningKey } from './fake-oidc/identity.ts';
import { createFakeProvider, ROUTES } from './fake-oidc/provider.ts';
import { FakeStore } from './fake-oidc/store.ts';

export type { FakeUser } from './fake-oidc/identity.ts';

/**
 * How the next call to an endpoint fails. `down`: the socket is destroyed without an answer; `slow`:
 * answered normally after `slowMs`; `500`: an HTML error page; `garbage`: 200 labelled JSON whose body
 * is not; `invalid_grant`: 400 with the RFC 6749 error body (what a dead refresh token gets).
 */
export type FailureMode = 'down' | 'slow' | '500' | 'garbage' | 'invalid_grant';

export type FailingEndpoint = 'token' | 'userinfo' | 'revoke' | 'discovery';

export interface FakeOidcOptions {
  shape: 'entra' | 'google';
  clientId: string;
  clientSecret: string;
  /** Entra only; default `11111111-1111-4111-8111-111111111111`. */
  tenantId?: string;
  /** Seconds; default 3600. Set it low (e.g. 120) to hand out tokens that are already "expiring". */
  accessTokenTtl?: number;
  /** How long a `slow` failure waits before answering; default 15000 ms. `close()` stops the wait. */
  slowMs?: number;
  /**
   * The client's registered redirect URIs. Omitted: any `http://` loopback redirect URI is accepted and
   * registered on first use, because the relying party's port is often known only after the fake starts.
   */
  redirectUris?: string[];
}

export interface FakeOidc {
  /** Entra: `http://127.0.0.1:<port>/<tenantId>/v2.0`; Google: `http://127.0.0.1:<port>`. */
  issuer: string;
  /**
   * Entra: `http://127.0.0.1:<port>/organizations/v2.0`, whose discovery document names the issuer
   * template `http://127.0.0.1:<port>/{tenantid}/v2.0` and this tenant's endpoints. Google: `issuer`.
   */
  multiTenantIssuer: string;
  /** Who the next login signs in as (settable). */
  user: FakeUser;
  calls: {
    discovery: number;
    authorize: number;
    token: { authorization_code: number; refresh_token: number };
    userinfo: number;
    revoke: number;
  };
  /** The query the relying party sent to the authorization endpoint, as sent. */
  lastAuthorizationParams: URLSearchParams | undefined;
  /** The last token request's form body and Authorization header, as sent. */
  lastTokenRequest: { params: URLSearchParams; authorization: string | undefined } | undefined;
  /** Makes the next `times` calls to `endpoint` fail as `mode` (they are still counted). */
  failNext(endpoint: FailingEndpoint, mode: FailureMode, times?: number): void;
  /** Merges `claims` into the next token response's ID token, re-signed with the fake's own key. */
  tamperNextIdToken(claims: Record<string, unknown>): void;
  /** Drops every grant and token, as when the user revokes consent upstream: refreshes get `invalid_grant`. */
  revokeAllGrants(): void;
  /** Registers another redirect URI for the client. */
  allowRedirectUri(uri: string): void;
  /** Every access and refresh token value issued so far (canaries to grep for). */
  issuedTokens(): string[];
  close(): Promise<void>;
}

const DEFAULT_TENANT = '11111111-1111-4111-8111-111111111111';
const DISCOVERY = '/.well-known/openid-configuration';

type Endpoint = FailingEndpoint | 'authorize' | 'interaction';

/**
 * Starts a fake OpenID Provider playing Entra ID (v2) or Google on 127.0.0.1: a real oidc-provider
 * behind a small HTTP edge that counts calls, injects failures and reshapes requests the way the real
 * IdP accepts them. Logins complete without a page, as `fake.user`, consenting to every requested scope.
 */
export async function startFakeOidc(options: FakeOidcOptions): Promise<FakeOidc> {
  const { shape, clientId, clientSecret } = options;
  const entra = shape === 'entra';
  const tenantId = options.tenantId ?? DEFAULT_TENANT;
  const slowMs = options.slowMs ?? 15_000;

  // The issuer embeds the port, so the server listens before the provider exists.
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const mountPath = entra ? `/${tenantId}/v2.0` : '';
  const routes: Record<string, string> = ROUTES[shape];

  const store = new FakeStore();
  const redirectUris = new Set(options.redirectUris);
  const writeClient = () =>
    store.put('Client', clientId, {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [...redirectUris],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: entra ? 'client_secret_post' : 'client_secret_basic',
    });
  writeClient();

  const failures = new Map<FailingEndpoint, FailureMode[]>();
  const timers = new Set<NodeJS.Timeout>();
  const templateRequests = new WeakSet<IncomingMessage>();
  const issued: string[] = [];
  let tamper: Record<string, unknown> | undefined;

  const fake: FakeOidc = {
    issuer: `${origin}${mountPath}`,
    multiTenantIssuer: entra ? `${origin}/organizations/v2.0` : origin,
    user: { email: 'ada@example.com', name: 'Ada Lovelace' },
    calls: { discovery: 0, authorize: 0, token: { authorization_code: 0, refresh_token: 0 }, userinfo: 0, revoke: 0 },
    lastAuthorizationParams: undefined,
    lastTokenRequest: undefined,
    failNext: (endpoint, mode, times = 1) =>
      failures.set(endpoint, [...(failures.get(endpoint) ?? []), ...Array<FailureMode>(times).fill(mode)]),
    tamperNextIdToken: (claims) => {
      tamper = claims;
    },
    revokeAllGrants: () => store.revokeAllGrants(),
    allowRedirectUri: (uri) => {
      redirectUris.add(uri);
      writeClient();
    },
    issuedTokens: () => [...issued],
    close: async () => {
      for (const timer of timers) clearTimeout(timer);
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };

  const { provider, finishInteraction } = createFakeProvider({
    shape,
    issuer: fake.issuer,
    mountPath,
    clientId,
    tenantId,
    accessTokenTtl: options.accessTokenTtl ?? 3600,
    key: generateSigningKey(),
    store,
    currentUser: () => fake.user,
    tenantIssuer: (tid) => `${origin}/${tid}/v2.0`,
    takeIdTokenTamper: () => {
      const claims = tamper;
      tamper = undefined;
      return claims;
    },
    onTokenIssued: (value) => issued.push(value),
    isTemplateDiscovery: (req) => templateRequests.has(req),
  });
  const callback = provider.callback();

  const endpointOf = (path: string): Endpoint | undefined => {
    if (path === DISCOVERY) return 'discovery';
    if (path.startsWith('/interaction/')) return 'interaction';
    const names: Record<string, Endpoint> = { authorization: 'authorize', token: 'token', userinfo: 'userinfo', revocation: 'revoke' };
    const route = Object.keys(routes).find((name) => routes[name] === path);
    return route ? names[route] : undefined;
  };

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', origin);
    let path = url.pathname;
    if (entra) {
      // Entra's multi-tenant discovery is this tenant's document under the `{tenantid}` issuer template.
      if (path === `/organizations/v2.0${DISCOVERY}`) {
        templateRequests.add(req);
        path = DISCOVERY;
      } else if (path.startsWith(`${mountPath}/`)) path = path.slice(mountPath.length);
      else return answer(res, 404, 'text/plain', 'not found');
    }
    setUrl(req, mountPath, `${path}${url.search}`);

    const endpoint = endpointOf(path);
    const body = (endpoint === 'token' || endpoint === 'revoke') && req.method === 'POST' ? await readBody(req) : undefined;
    const form = new URLSearchParams(body?.toString('utf8'));
    if (endpoint === 'discovery') fake.calls.discovery++;
    if (endpoint === 'userinfo') fake.calls.userinfo++;
    if (endpoint === 'revoke') fake.calls.revoke++;
    if (endpoint === 'authorize') {
      fake.calls.authorize++;
      fake.lastAuthorizationParams = new URLSearchParams(url.search);
    }
    if (endpoint === 'token') {
      const grantType = form.get('grant_type');
      if (grantType === 'authorization_code' || grantType === 'refresh_token') fake.calls.token[grantType]++;
      fake.lastTokenRequest = { params: new URLSearchParams(form), authorization: req.headers.authorization };
    }

    const failure = endpoint === 'authorize' || endpoint === 'interaction' ? undefined : endpoint && failures.get(endpoint)?.shift();
    if (failure === 'slow') {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          timers.delete(timer);
          resolve();
        }, slowMs);
        timers.add(timer);
      });
      // A caller that gave up is not served late: a refresh it never saw must not rotate its token away.
      if (req.socket.destroyed) return;
    } else if (failure) return fail(req, res, failure);

    if (endpoint === 'interaction') return finishInteraction(req, res);
    if (endpoint === 'authorize') {
      const refusal = prepareAuthorization(req, url);
      if (refusal) return answer(res, 400, 'text/html', `<!doctype html><title>Sign in</title><p>${refusal}</p>`);
    }
    if (endpoint === 'token' && entra && req.headers.authorization) {
      return answer(res, 401, 'application/json', oauthError('invalid_client', 'AADSTS7000216: client_secret_post only (fake Entra)'));
    }
    // Entra accepts a refresh that names the scopes of the original request (Graph's User.Read, offline_access);
    // oidc-provider kept only the ones it knows, so the fake refreshes with the grant's own scope instead.
    if (endpoint === 'token' && entra && form.get('grant_type') === 'refresh_token') form.delete('scope');
    // Google's revocation endpoint takes the token alone, without client authentication (RFC 7009 allows it).
    if (endpoint === 'revoke' && !req.headers.authorization && !form.has('client_secret')) {
      form.set('client_id', clientId);
      form.set('client_secret', clientSecret);
    }
    callback(body ? replayWithBody(req, Buffer.from(form.toString())) : req, res);
  }

  /** Rewrites an authorization request the way the real IdP would take it; returns why it is refused, if it is. */
  function prepareAuthorization(req: IncomingMessage, url: URL): string | undefined {
    const params = url.searchParams;
    // The Entra v2 endpoint refuses the v1 `resource` parameter (DESIGN.md §5).
    if (entra && params.has('resource')) return "AADSTS901002: The 'resource' request parameter isn't supported.";
    const redirectUri = params.get('redirect_uri') ?? '';
    const loopback = URL.parse(redirectUri);
    if (!options.redirectUris && loopback?.protocol === 'http:' && ['localhost', '127.0.0.1'].includes(loopback.hostname)) {
      if (!redirectUris.has(redirectUri)) fake.allowRedirectUri(redirectUri);
    }
    // Both IdPs accept prompt=select_account, which oidc-provider does not know; signing in is automatic anyway.
    const prompt = params
      .get('prompt')
      ?.split(' ')
      .filter((value) => value !== 'select_account');
    if (prompt?.length) params.set('prompt', prompt.join(' '));
    else params.delete('prompt');
    setUrl(req, mountPath, `${req.url?.split('?')[0]}?${params}`);
    return undefined;
  }

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((error: unknown) => {
      const status = (error as { statusCode?: number }).statusCode ?? 500;
      if (!res.headersSent) answer(res, status, 'text/plain', (error as Error).message);
    });
  });
  return fake;
}
