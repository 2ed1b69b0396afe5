import * as client from 'openid-client';
import { UPSTREAM_TIMEOUT_MS, upstreamFetch } from './http.ts';
import { UpstreamGrantError, UpstreamLoginError, type UpstreamLoginRequest, type UpstreamTokens } from './types.ts';

export interface OidcClientOptions {
  /** Shown to users in error messages ("Google did not answer in time"). */
  label: string;
  /** The configured issuer; discovery is `${issuer}/.well-known/openid-configuration`. */
  issuer: string;
  clientId: string;
  clientSecret: string | undefined;
  /** Entra: `client_secret_post` (its secrets contain characters Basic's form-encoding breaks). */
  tokenAuth: 'client_secret_post' | 'client_secret_basic';
}

export type IdTokenClaims = client.IDToken;

/** What a code exchange or a refresh returned, ID token claims already validated by openid-client. */
export interface OidcTokens {
  tokens: UpstreamTokens;
  claims: IdTokenClaims | undefined;
}

/**
 * The OpenID Connect relying party one upstream needs, on openid-client: discovery (cached, retried
 * after a failure), the authorization URL with PKCE S256, `state` and `nonce`, the code exchange with
 * every ID token check, refresh, userinfo and revocation. Every call goes through `upstreamFetch`
 * (User-Agent, 10 s timeout), and every failure becomes an `UpstreamLoginError` (login) or an
 * `UpstreamGrantError` (grant calls) whose message carries no token and no upstream body.
 */
export function createOidcClient(options: OidcClientOptions) {
  const { label } = options;
  const secret = options.clientSecret ?? '';
  const auth = options.tokenAuth === 'client_secret_post' ? client.ClientSecretPost(secret) : client.ClientSecretBasic(secret);
  const send: client.CustomFetch = (url, init) => upstreamFetch(label, url, init as RequestInit);
  let discovered: Promise<client.ServerMetadata> | undefined;

  /**
   * The issuer's metadata. openid-client resolves Entra's `{tenantid}` issuer template itself only for
   * login.microsoftonline.com, so discovery goes to the well-known URL and the issuer check is ours,
   * the same for Entra's sovereign clouds and for the fake in tests.
   */
  function metadata(): Promise<client.ServerMetadata> {
    discovered ??= client
      .discovery(new URL(`${options.issuer}/.well-known/openid-configuration`), options.clientId, secret, auth, transport())
      .then((configuration) => {
        const server = configuration.serverMetadata();
        if (server.issuer !== options.issuer && server.issuer !== tenantTemplateOf(options.issuer))
          throw new UpstreamGrantError('transient', `${label}'s discovery document names a different issuer than the one configured`);
        return server;
      })
      .catch((error: unknown) => {
        discovered = undefined; // the next login tries again instead of caching an outage
        throw asGrantError(label, error);
      });
    return discovered;
  }

  const transport = (fetch: client.CustomFetch = send) => ({
    [client.customFetch]: fetch,
    timeout: UPSTREAM_TIMEOUT_MS / 1000,
    ...(options.issuer.startsWith('http://') ? { execute: [client.allowInsecureRequests] } : {}),
  });

  /** A Configuration bound to one issuer (a tenant's, for a `{tenantid}` template) and one fetch. */
  function configuration(server: client.ServerMetadata, issuer: string, fetch: client.CustomFetch = send): client.Configuration {
    const config = new client.Configuration({ ...server, issuer }, options.clientId, secret, auth);
    const { execute, ...rest } = transport(fetch);
    config[client.customFetch] = rest[client.customFetch];
    config.timeout = rest.timeout;
    for (const extension of execute ?? []) extension(config);
    return config;
  }

  return {
    async authorizationUrl(request: UpstreamLoginRequest, scopes: readonly string[], extra: Record<string, string> = {}): Promise<URL> {
      const server = await metadata();
      // Only our own parameters: the MCP client's `resource` and `scope` never travel upstream (Entra's v2 endpoint rejects `resource`).
      return client.buildAuthorizationUrl(configuration(server, server.issuer), {
        redirect_uri: request.redirectUri,
        scope: scopes.join(' '),
        state: request.state,
        nonce: request.nonce,
        code_challenge: await client.calculatePKCECodeChallenge(request.codeVerifier),
        code_challenge_method: 'S256',
        ...extra,
      });
    },

    /** Exchanges the callback's code; `state`, `iss`, PKCE, `nonce`, `aud`, `exp` are all checked. */
    async exchangeCode(callbackUrl: URL, request: UpstreamLoginRequest): Promise<OidcTokens> {
      const server = await metadata();
      const checks = {
        pkceCodeVerifier: request.codeVerifier,
        expectedState: request.state,
        expectedNonce: request.nonce,
        idTokenExpected: true,
      };
      try {
        if (!server.issuer.includes('{tenantid}'))
          return toOidcTokens(await client.authorizationCodeGrant(configuration(server, server.issuer), callbackUrl, checks));
        return toOidcTokens(await exchangeForTenant(server, callbackUrl, checks));
      } catch (error) {
        throw asLoginError(label, error);
      }
    },

    /** `scopes` for upstreams that want them named again (Entra); without, the grant's own scope. */
    async refresh(tokens: UpstreamTokens, scopes?: readonly string[]): Promise<UpstreamTokens> {
      if (!tokens.refreshToken) throw new UpstreamGrantError('terminal', `${label} gave no refresh token; reconnect your account`);
      const server = await metadata();
      try {
        const response = await client.refreshTokenGrant(
          configuration(server, tokens.issuer ?? server.issuer),
          tokens.refreshToken,
          scopes ? { scope: scopes.join(' ') } : {},
        );
        const { tokens: fresh, claims } = toOidcTokens(response);
        // A refresh response may omit the refresh token (Google always does): the old one stays valid.
        return {
          ...fresh,
          refreshToken: fresh.refreshToken ?? tokens.refreshToken,
          issuer: claims?.iss ?? tokens.issuer,
          idTokenSubject: tokens.idTokenSubject,
        };
      } catch (error) {
        throw asGrantError(label, error);
      }
    },

    async userInfo(tokens: UpstreamTokens): Promise<client.UserInfoResponse> {
      const server = await metadata();
      try {
        return await client.fetchUserInfo(
          configuration(server, tokens.issuer ?? server.issuer),
          tokens.accessToken,
          tokens.idTokenSubject ?? client.skipSubjectCheck,
        );
      } catch (error) {
        throw asGrantError(label, error);
      }
    },

    /** RFC 7009 revocation, when the issuer advertises an endpoint for it; false when it does not. */
    async revoke(token: string): Promise<boolean> {
      const server = await metadata();
      if (!server.revocation_endpoint) return false;
      try {
        await client.tokenRevocation(configuration(server, server.issuer), token);
        return true;
      } catch (error) {
        throw asGrantError(label, error);
      }
    },
  };

  /**
   * Entra multi-tenant: the ID token's issuer is the `{tenantid}` template filled with the user's
   * tenant, which only the token response names. The code is posted once through a Configuration
   * whose fetch keeps the response and stops; the tenant's Configuration then validates that same
   * response, so every check openid-client makes still runs, against the right issuer.
   */
  async function exchangeForTenant(
    server: client.ServerMetadata,
    callbackUrl: URL,
    checks: client.AuthorizationCodeGrantChecks,
  ): Promise<Awaited<ReturnType<typeof client.authorizationCodeGrant>>> {
    let captured: Response | undefined;
    const capture: client.CustomFetch = async (url, init) => {
      captured = await send(url, init);
      throw new Error('token response captured');
    };
    try {
      await client.authorizationCodeGrant(configuration(server, server.issuer, capture), callbackUrl, checks);
    } catch (error) {
      if (!captured) throw error;
    }
    const response = captured as Response;
    const tenant = response.ok ? tenantOfTokenResponse(await response.clone().text()) : undefined;
    const issuer = tenant ? server.issuer.replace('{tenantid}', tenant) : server.issuer;
    return client.authorizationCodeGrant(
      configuration(server, issuer, async () => response),
      callbackUrl,
      checks,
    );
  }
}

export type OidcClient = ReturnType<typeof createOidcClient>;

/** `https://login.microsoftonline.com/organizations/v2.0` → `…/{tenantid}/v2.0`, the issuer Entra's multi-tenant discovery names. */
function tenantTemplateOf(issuer: string): string | undefined {
  const url = URL.parse(issuer);
  if (!url) return undefined;
  const segments = url.pathname.split('/');
  const index = segments.findIndex((segment) => ['organizations', 'common', 'consumers'].includes(segment));
  if (index < 0) return undefined;
  segments[index] = '{tenantid}';
  return `${url.origin}${segments.join('/')}`;
}

/** The unverified `tid` of the ID token in a token response; verified right after against the issuer it implies. */
function tenantOfTokenResponse(body: string): string | undefined {
  try {
    const { id_token: idToken } = JSON.parse(body) as { id_token?: unknown };
    if (typeof idToken !== 'string') return undefined;
    const { tid } = JSON.parse(Buffer.from(idToken.split('.')[1] ?? '', 'base64url').toString('utf8')) as { tid?: unknown };
    // The tenant is pasted into a URL: only the shape of a tenant id (a GUID) may pass.
    return typeof tid === 'string' && /^[A-Za-z0-9-]{1,64}$/.test(tid) ? tid : undefined;
  } catch {
    return undefined;
  }
}

function toOidcTokens(response: Awaited<ReturnType<typeof client.authorizationCodeGrant>>): OidcTokens {
  const claims = response.claims();
  const expiresIn = response.expiresIn();
  return {
    claims,
    tokens: {
      accessToken: response.access_token,
      refreshToken: response.refresh_token,
      expiresAt: expiresIn === undefined ? undefined : Math.floor(Date.now() / 1000) + expiresIn,
      scope: response.scope,
      issuer: claims?.iss,
      idTokenSubject: claims?.sub,
    },
  };
}

/** Codes openid-client uses when an ID token or response fails a security check (not an outage). */
const CHECK_FAILED = new Set([
  'OAUTH_JWT_CLAIM_COMPARISON_FAILED',
  'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED',
  'OAUTH_JWT_TIMESTAMP_CHECK_FAILED',
]);

/** A failed code exchange as the user sees it: refused or failed checks are a login error, the rest an outage. */
function asLoginError(label: string, error: unknown): UpstreamLoginError | UpstreamGrantError {
  if (error instanceof UpstreamLoginError) return error;
  if (error instanceof client.ResponseBodyError && error.status < 500)
    return new UpstreamLoginError(`${label} refused the sign-in (${error.error.slice(0, 64)}).`);
  if (error instanceof client.AuthorizationResponseError)
    return new UpstreamLoginError(`${label} did not sign you in (${error.error.slice(0, 64)}).`);
  if (error instanceof client.ClientError && CHECK_FAILED.has(error.code ?? ''))
    return new UpstreamLoginError(`The sign-in response from ${label} failed its security checks.`);
  return asGrantError(label, error);
}

/**
 * A failed grant call: `invalid_grant` is terminal (the user revoked access or the grant expired);
 * anything else, including `invalid_client` (the operator's client secret expired: not the user's
 * fault), is transient, so no grant dies for an outage or a misconfiguration.
 */
export function asGrantError(label: string, error: unknown): UpstreamGrantError {
  if (error instanceof UpstreamGrantError) return error;
  if (error instanceof Error && error.cause instanceof UpstreamGrantError) return error.cause;
  if (error instanceof client.ResponseBodyError && error.error === 'invalid_grant')
    return new UpstreamGrantError('terminal', `${label} no longer accepts this account's grant; reconnect your account`);
  if (error instanceof client.WWWAuthenticateChallengeError && error.status === 401)
    return new UpstreamGrantError('terminal', `${label} no longer accepts this account's token; reconnect your account`);
  return new UpstreamGrantError('transient', `${label} could not be reached or gave an answer Gatehouse did not understand`);
}
