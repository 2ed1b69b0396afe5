import { randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Configuration, KoaContextWithOIDC } from 'oidc-provider';
import { Provider } from 'oidc-provider';
import { claimsFor, decodeJwtPayload, type FakeUser, resignJwt, type Shape, type SigningKey } from './identity.ts';
import type { FakeStore } from './store.ts';

/** Paths under the issuer, shaped like each IdP's so logs read naturally. */
export const ROUTES = {
  entra: { authorization: '/oauth2/v2.0/authorize', token: '/oauth2/v2.0/token', userinfo: '/oidc/userinfo', jwks: '/discovery/v2.0/keys' },
  google: {
    authorization: '/o/oauth2/v2/auth',
    token: '/token',
    userinfo: '/v1/userinfo',
    jwks: '/oauth2/v3/certs',
    revocation: '/revoke',
  },
} as const;

export interface FakeProviderOptions {
  shape: Shape;
  issuer: string;
  /** The issuer's path ('' for Google): interaction URLs live under it. */
  mountPath: string;
  clientId: string;
  tenantId: string;
  accessTokenTtl: number;
  key: SigningKey;
  store: FakeStore;
  /** Who the next login signs in as. */
  currentUser(): FakeUser;
  /** Entra's issuer for another tenant (a user whose `tid` is not the fake's tenant). */
  tenantIssuer(tid: string): string;
  /** Claims to force into the next ID token, once. */
  takeIdTokenTamper(): Record<string, unknown> | undefined;
  /** Called with every access and refresh token value minted. */
  onTokenIssued(value: string): void;
  /** Requests answered as Entra's multi-tenant (`{tenantid}`) discovery document. */
  isTemplateDiscovery(req: IncomingMessage): boolean;
}

export interface FakeProvider {
  provider: Provider;
  /** Completes an interaction without a page: signs in as the current user and consents to every requested scope. */
  finishInteraction(req: IncomingMessage, res: ServerResponse): Promise<void>;
}

/** A real oidc-provider configured to behave like Entra ID v2 or Google on the wire. */
export function createFakeProvider(options: FakeProviderOptions): FakeProvider {
  const { shape, store } = options;
  const accounts = new Map<string, Record<string, unknown>>();
  const offlineGrants = new Set<string>();
  const consentedAccounts = new Set<string>();
  const routes = ROUTES[shape];
  const entra = shape === 'entra';

  const configuration: Configuration = {
    adapter: store.factory,
    clients: [],
    jwks: { keys: [options.key.jwk] } as Configuration['jwks'],
    findAccount: async (_ctx, sub) => {
      const claims = accounts.get(sub);
      return claims && { accountId: sub, claims: async () => ({ ...claims, sub }) };
    },
    // Unknown scopes (Graph's User.Read) are ignored by oidc-provider, not refused, as Entra accepts them.
    scopes: entra ? ['openid', 'offline_access', 'email', 'profile'] : ['openid', 'email', 'profile'],
    claims: entra
      ? { openid: ['sub', 'tid', 'oid', 'ver'], email: ['email'], profile: ['name', 'preferred_username'] }
      : { openid: ['sub', 'hd'], email: ['email', 'email_verified'], profile: ['name'] },
    extraParams: entra ? ['login_hint', 'domain_hint'] : ['access_type', 'include_granted_scopes', 'login_hint', 'hd'],
    responseTypes: ['code'],
    // Entra: client_secret_post only (DESIGN.md §5); Basic is refused at the HTTP edge, since oidc-provider treats the two alike.
    clientAuthMethods: entra ? ['client_secret_post'] : ['client_secret_basic', 'client_secret_post'],
    pkce: { required: () => true },
    ttl: {
      AccessToken: options.accessTokenTtl,
      AuthorizationCode: 600,
      IdToken: 3600,
      Interaction: 600,
      Session: 3600,
      RefreshToken: 90 * 24 * 3600,
      Grant: 365 * 24 * 3600,
    },
    // Plain http on 127.0.0.1: cookies must not be `secure`, or a real browser drops them.
    cookies: {
      keys: [randomBytes(32).toString('base64url')],
      long: { httpOnly: true, sameSite: 'lax', secure: false, signed: true },
      short: { httpOnly: true, sameSite: 'lax', secure: false, signed: true },
    },
    routes,
    // Before the client and redirect URI are trusted an IdP shows a page, never a redirect.
    renderError: async (ctx, out) => {
      ctx.type = 'text/plain';
      ctx.body = `Sign-in error: ${out.error}: ${out.error_description ?? ''}`;
    },
    interactions: { url: (_ctx, interaction) => `${options.mountPath}/interaction/${interaction.uid}` },
    // Entra: a refresh token when offline_access was asked for; Google: when access_type=offline (decided at consent).
    issueRefreshToken: async (_ctx, _client, code) => typeof code.grantId === 'string' && offlineGrants.has(code.grantId),
    // Entra rotates refresh tokens; Google keeps the one it issued and sends none on refresh.
    rotateRefreshToken: entra,
    expiresWithSession: async () => false,
    // Real IdPs put email and name in the ID token even when an access token is issued too.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: false },
      resourceIndicators: { enabled: false },
      introspection: { enabled: false },
      userinfo: { enabled: true },
      // Entra has no RFC 7009 endpoint (DESIGN.md §5); Google has one.
      revocation: { enabled: !entra, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      rpInitiatedLogout: { enabled: entra },
    },
  };

  const provider = new Provider(options.issuer, configuration);
  mintCanaryTokens(provider, shape, options.onTokenIssued);
  // The authorization request as sent, by interaction: oidc-provider drops offline_access without
  // prompt=consent (OIDC Core §11), which Entra does not, so the consent step reads the raw request.
  const requested = new Map<string, URLSearchParams>();
  // The API scopes consented to per grant (Graph's Calendars.Read, Google's calendar.readonly): the real IdPs
  // name them in the token response's `scope`, which oidc-provider, not knowing them, leaves out.
  const apiScopes = new Map<string, string[]>();
  provider.use(async (ctx, next) => {
    await next();
    const oidc = (ctx as KoaContextWithOIDC).oidc;
    const interaction = oidc?.route === 'authorization' ? oidc.entities.Interaction : undefined;
    if (interaction) requested.set(interaction.uid, new URLSearchParams(ctx.querystring));
    reshapeResponse(ctx as KoaContextWithOIDC, options);
    const granted = oidc?.route === 'token' && ctx.status === 200 ? apiScopes.get(String(oidc.entities.Grant?.jti)) : undefined;
    const body = ctx.body as { scope?: string } | undefined;
    if (granted?.length && body) body.scope = [body.scope, ...granted].filter(Boolean).join(' ');
  });

  async function finishInteraction(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const interaction = await provider.interactionDetails(req, res);
    const claims = claimsFor(shape, options.currentUser(), { clientId: options.clientId, tenantId: options.tenantId });
    const accountId = String(claims.sub);
    accounts.set(accountId, claims);
    const previous = interaction.grantId ? await provider.Grant.find(interaction.grantId) : undefined;
    const grant =
      previous?.accountId === accountId ? previous : new provider.Grant({ accountId, clientId: String(interaction.params.client_id) });
    grant.addOIDCScope(String(interaction.params.scope ?? 'openid'));
    const grantId = await grant.save();
    const request = requested.get(interaction.uid) ?? new URLSearchParams();
    requested.delete(interaction.uid);
    if (wantsOffline(request, accountId)) offlineGrants.add(grantId);
    apiScopes.set(
      grantId,
      (request.get('scope') ?? '').split(' ').filter((scope) => scope && !new Set(configuration.scopes).has(scope)),
    );
    consentedAccounts.add(accountId);
    await provider.interactionFinished(req, res, { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
  }

  function wantsOffline(request: URLSearchParams, accountId: string): boolean {
    if (entra) return (request.get('scope') ?? '').split(' ').includes('offline_access');
    // Google issues a refresh token on the first consent, or on any consent forced by prompt=consent.
    const forcedConsent = (request.get('prompt') ?? '').split(' ').includes('consent');
    return request.get('access_type') === 'offline' && (forcedConsent || !consentedAccounts.has(accountId));
  }

  return { provider, finishInteraction };
}

/**
 * Every access and refresh token value is a canary (`CANARY-<shape>-at-…`, `CANARY-<shape>-rt-…`), so
 * tests can grep responses, databases and logs for them. oidc-provider's opaque token value is the
 * model's id, so the per-provider token classes get an id generator that calls the original (it also
 * records the token format) and then substitutes a canary.
 */
function mintCanaryTokens(provider: Provider, shape: Shape, onTokenIssued: (value: string) => void): void {
  for (const [model, kind] of [
    [provider.AccessToken, 'at'],
    [provider.RefreshToken, 'rt'],
  ] as const) {
    const prototype = model.prototype as unknown as { generateTokenId(): string };
    const original = prototype.generateTokenId;
    prototype.generateTokenId = function generateCanaryId(this: unknown) {
      original.call(this);
      const value = `CANARY-${shape}-${kind}-${randomBytes(24).toString('base64url')}`;
      onTokenIssued(value);
      return value;
    };
  }
}

/** Turns oidc-provider's responses into what Entra or Google send, after the provider has answered. */
function reshapeResponse(ctx: KoaContextWithOIDC, options: FakeProviderOptions): void {
  const entra = options.shape === 'entra';
  const route = ctx.oidc?.route;
  const body = ctx.body && typeof ctx.body === 'object' && !Buffer.isBuffer(ctx.body) ? (ctx.body as Record<string, unknown>) : undefined;

  if (route === 'discovery' && body && entra) {
    // Real Entra does not implement RFC 9207, and its multi-tenant document carries an issuer template.
    delete body.authorization_response_iss_parameter_supported;
    if (options.isTemplateDiscovery(ctx.req)) body.issuer = options.tenantIssuer('{tenantid}');
  }

  if ((route === 'authorization' || route === 'resume') && entra) {
    const location = URL.parse(ctx.response.get('location'));
    if (location?.searchParams.get('iss') === options.issuer) {
      location.searchParams.delete('iss');
      ctx.redirect(location.href);
    }
  }

  if (route === 'token' && body && ctx.status === 200) {
    if (!entra && ctx.oidc.params?.grant_type === 'refresh_token') delete body.refresh_token;
    if (typeof body.id_token === 'string') body.id_token = rewriteIdToken(body.id_token, options);
  }
}

/**
 * Entra signs a guest tenant's user in with that tenant's issuer; a pending tamper is merged last. Both
 * are re-signed with the fake's own key, so only claim checks can catch them.
 */
function rewriteIdToken(idToken: string, options: FakeProviderOptions): string {
  const payload = decodeJwtPayload(idToken);
  const changes: Record<string, unknown> = {};
  if (options.shape === 'entra' && typeof payload.tid === 'string' && payload.tid !== options.tenantId) {
    changes.iss = options.tenantIssuer(payload.tid);
  }
  Object.assign(changes, options.takeIdTokenTamper());
  return Object.keys(changes).length > 0 ? resignJwt(idToken, changes, options.key) : idToken;
}
