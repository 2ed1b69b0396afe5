import type { AdapterFactory, Configuration, FindAccount, KoaContextWithOIDC } from 'oidc-provider';
import { errors, Provider } from 'oidc-provider';
import type { Config } from '../config.ts';
import type { SigningJwks } from './keys.ts';
import { clientScope } from './registration-policy.ts';
import type { ScopePolicy } from './scopes.ts';

export interface ProviderOptions {
  config: Config;
  adapter: AdapterFactory;
  jwks: SigningJwks;
  findAccount: FindAccount;
  /** Which scopes exist (the tool families of the enabled providers). */
  scopes: ScopePolicy;
  /** Renders the end-user error page (errors before the client and redirect URI are trusted). */
  renderErrorPage(title: string, message: string): string;
  /**
   * > WARNING: replaces oidc-provider's SSRF-safe fetch for Client ID Metadata Documents, lifting the
   * > ban on loopback and private addresses. Only tests pass it; `buildApp` refuses it in production.
   */
  dangerouslyFetchClientMetadata?: typeof fetch;
}

const TTL = {
  AuthorizationCode: 60,
  Interaction: 3600,
  Session: 14 * 24 * 3600,
  IdToken: 3600,
  /** Idle lifetime of one refresh token; each rotation starts a new one. */
  RefreshToken: 30 * 24 * 3600,
  /** Caps every refresh chain: after this the user signs in again (DESIGN.md §3). */
  Grant: 90 * 24 * 3600,
};

/** oidc-provider's account lookup: an account is whatever the account store knows; `sub` is its id. */
export function accountFinder(accounts: { hasAccount(accountId: string): boolean }): FindAccount {
  return async (_ctx, sub) => (accounts.hasAccount(sub) ? { accountId: sub, claims: async () => ({ sub }) } : undefined);
}

/** Same URL up to a trailing slash and the case of scheme and host (DESIGN.md §4). */
export function isOurResource(resource: string, resourceUrl: string): boolean {
  const url = URL.parse(resource);
  if (!url || url.search || url.hash || url.username || url.password) return false;
  return `${url.origin}${url.pathname.replace(/\/$/, '')}` === resourceUrl;
}

/**
 * The only `new Provider(...)`: every oidc-provider default that MCP needs changed is changed here,
 * each with the reason (DESIGN.md §3).
 */
export function createProvider(options: ProviderOptions): Provider {
  const { config } = options;
  const scopes = options.scopes.names.join(' ');

  const configuration: Configuration = {
    adapter: options.adapter,
    jwks: options.jwks as Configuration['jwks'],
    findAccount: options.findAccount,
    clients: [],
    scopes: ['openid', 'email', 'profile', ...options.scopes.names],
    claims: { openid: ['sub'], email: ['email'], profile: ['name'] },
    responseTypes: ['code'],
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post'],
    extraClientMetadata: {
      // RFC 7591 §2 fields oidc-provider does not know: kept, so a registration echoes them back.
      properties: ['software_id', 'software_version'],
      // This validator is oidc-provider's one hook into a client's metadata before its own checks, for
      // every client: registered, stored, or read from a Client ID Metadata Document. The scope policy of
      // registration (`clientScope`) is applied here for the documents, which no route of ours sees: a
      // document listing scopes Gatehouse does not have ("offline_access") was refused, and one listing
      // only "mcp" could never step up to a tool family.
      validator(_ctx, key, value, metadata) {
        if (value !== undefined && (typeof value !== 'string' || value.length > 200))
          throw new errors.InvalidClientMetadata(`${key} must be a string of at most 200 characters`);
        if (key !== 'software_id' || typeof metadata.scope !== 'string') return;
        const scope = clientScope(metadata.scope, options.scopes.names);
        if (scope) metadata.scope = scope;
        else delete metadata.scope;
      },
    },
    clientDefaults: {
      grant_types: ['authorization_code', 'refresh_token'],
      id_token_signed_response_alg: 'ES256',
      response_types: ['code'],
    },
    enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
    // OAuth 2.1 §4.1.1 and the MCP authorization spec: PKCE (S256 only) for every client, confidential too.
    pkce: { required: () => true },
    ttl: { ...TTL, AccessToken: config.accessTokenTtl },
    cookies: {
      keys: [...config.cookieSecrets],
      long: { httpOnly: true, sameSite: 'lax', signed: true },
      short: { httpOnly: true, sameSite: 'lax', signed: true },
    },
    routes: {
      authorization: '/authorize',
      token: '/token',
      registration: '/register',
      revocation: '/revoke',
      introspection: '/introspect',
      jwks: '/jwks',
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    // Refresh tokens for every client allowed the grant; MCP clients do not ask for offline_access.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    rotateRefreshToken: true,
    // A token outlives the browser session at Gatehouse: the MCP client holds it, not the browser.
    expiresWithSession: async () => false,
    // Browser clients (MCP Inspector) call /token and /revoke cross-origin; PKCE and client auth protect them.
    clientBasedCORS: () => true,
    conformIdTokenClaims: true,
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      // The same headers the login pages get (login/routes.ts): this page is rendered by the provider.
      ctx.set('cache-control', 'no-store');
      ctx.set(
        'content-security-policy',
        "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
      );
      ctx.set('x-frame-options', 'DENY');
      ctx.set('referrer-policy', 'no-referrer');
      ctx.set('x-content-type-options', 'nosniff');
      ctx.body = options.renderErrorPage(
        out.error === 'server_error' ? 'Something went wrong' : 'This request cannot continue',
        describeError(out),
      );
    },
    features: {
      devInteractions: { enabled: false },
      rpInitiatedLogout: { enabled: false },
      dPoP: { enabled: false },
      pushedAuthorizationRequests: { enabled: false },
      userinfo: { enabled: false },
      // Only the client a token was issued to may revoke or introspect it: with open registration, any
      // caller can become a confidential client, so the provider's defaults would let strangers read tokens.
      revocation: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      introspection: { enabled: true, allowedPolicy: async (_ctx, client, token) => token.clientId === client.clientId },
      registration: { enabled: true, initialAccessToken: false, issueRegistrationAccessToken: true },
      registrationManagement: { enabled: true, rotateRegistrationAccessToken: false },
      clientIdMetadataDocument: {
        enabled: true,
        ack: 'draft-02',
        // CIMD clients are public (the draft forbids shared secrets in the document).
        allowClient: async (_ctx, client) => client.clientAuthMethod === 'none',
      },
      resourceIndicators: {
        enabled: true,
        // A request without `resource` is for the MCP endpoint, the only resource there is.
        defaultResource: async () => config.resourceUrl,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (!isOurResource(resource, config.resourceUrl)) throw new errors.InvalidTarget();
          return { scope: scopes, audience: config.resourceUrl, accessTokenTTL: config.accessTokenTtl, accessTokenFormat: 'opaque' };
        },
      },
    },
  };
  if (options.dangerouslyFetchClientMetadata) {
    const fetchMetadata = options.dangerouslyFetchClientMetadata;
    configuration.fetch = (url, init) => {
      const { dispatcher: _ssrfGuard, ...rest } = init as RequestInit & { dispatcher?: unknown };
      return fetchMetadata(url, rest);
    };
  }

  const provider = new Provider(config.publicUrl, configuration);
  // oidc-provider builds endpoint URLs from the request's host and scheme; `pinPublicOrigin` in
  // routes.ts sets both from PUBLIC_URL on every request, so the forwarded headers are always ours.
  provider.proxy = true;
  return provider;
}

/** A sentence for the error page: the OAuth error description, never a stack or a token. */
function describeError(out: { error: string; error_description?: string }): string {
  return out.error_description ? `${out.error_description} (${out.error})` : out.error;
}

export type { KoaContextWithOIDC };
