import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { Provider } from 'oidc-provider';
import { OAuthError } from '../errors.ts';

export interface BearerOptions {
  provider: Provider;
  resourceUrl: string;
  /** `${PUBLIC_URL}/.well-known/oauth-protected-resource/mcp`, named in every challenge (RFC 9728 §5.1). */
  resourceMetadataUrl: string;
  /** Scopes every MCP request needs. */
  requiredScopes: readonly string[];
  /**
   * The scopes a 401 challenge names, which MCP clients ask for (SEP-835 puts the challenge first):
   * every scope of the deployment, so one consent covers every tool family and step-up is the
   * exception. Defaults to `requiredScopes`.
   */
  challengeScopes?: readonly string[];
  /**
   * Whether an access token's row still exists: one covering-index read. With it, a token verified
   * once is not decoded again, but revocation (which deletes the row) still takes effect on the very
   * next request, in every process sharing the database. Expiry is checked here, against the verified `exp`.
   */
  tokenExists?(token: string): boolean;
}

interface Verified {
  auth: AuthInfo;
  expiresAt: number | undefined;
}

/** Authorization headers already verified through the provider's model, per gate; bounded, oldest evicted first. */
const verifiedByGate = new WeakMap<BearerOptions, Map<string, Verified>>();
const VERIFIED_MAX = 10_000;

/** oidc-provider's opaque tokens are 43 base64url characters; anything else is refused before a lookup. */
const OPAQUE_TOKEN = /^[A-Za-z0-9_-]{20,128}$/;

/** The `WWW-Authenticate` value for a 401/403 (RFC 6750 §3, RFC 9728 §5.1). */
export function bearerChallenge(options: BearerOptions, error?: { code: string; description: string; scope?: readonly string[] }): string {
  const params = [
    `resource_metadata="${options.resourceMetadataUrl}"`,
    `scope="${(error?.scope ?? options.challengeScopes ?? options.requiredScopes).join(' ')}"`,
  ];
  if (error) params.unshift(`error="${error.code}"`, `error_description="${error.description}"`);
  return `Bearer ${params.join(', ')}`;
}

/** The 401 for a request that carries no token at all. */
export const missingTokenError = (options: BearerOptions): OAuthError => unauthorized(options);

function unauthorized(options: BearerOptions, description?: string): OAuthError {
  if (description) {
    return new OAuthError('invalid_token', description, 401, {
      'www-authenticate': bearerChallenge(options, { code: 'invalid_token', description }),
    });
  }
  // RFC 6750 §3.1: no error code for a request without a token. The gate builds this one once (routes.ts).
  return new OAuthError('invalid_request', 'an access token is required', 401, { 'www-authenticate': bearerChallenge(options) });
}

/**
 * The AuthInfo of an `Authorization` header this gate verified before, if its token is still live;
 * undefined if the header is new here. Synchronous (no decoding, one existence read), so the gate
 * answers a client's every later request without a promise. Throws like `verifyBearer` once the token
 * expired or was revoked.
 */
export function recallBearer(header: string | undefined, options: BearerOptions): AuthInfo | undefined {
  if (!header || !options.tokenExists) return undefined;
  const cache = verifiedByGate.get(options);
  const verified = cache?.get(header);
  if (!verified) return undefined;
  if ((verified.expiresAt === undefined || verified.expiresAt > Date.now() / 1000) && options.tokenExists(verified.auth.token))
    return verified.auth;
  cache?.delete(header);
  throw unauthorized(options, 'the access token is expired, revoked or unknown');
}

/**
 * The token of an `Authorization: Bearer` header, or the 401 for a missing or malformed one; synchronous,
 * so the gate refuses those without a promise.
 */
export function bearerToken(header: string | undefined, options: BearerOptions): string {
  if (!header) throw unauthorized(options);
  const match = /^Bearer +([^ ]+)$/i.exec(header);
  if (!match) throw unauthorized(options, 'the Authorization header is not a Bearer token');
  const token = match[1] as string;
  if (!OPAQUE_TOKEN.test(token)) throw unauthorized(options, 'the access token is malformed');
  return token;
}

/**
 * Decides whether an `Authorization` header carries a live access token issued for this resource
 * (RFC 8707 audience), with the scopes MCP needs. Returns the SDK's AuthInfo or throws an OAuthError
 * whose headers carry the challenge. Tokens in the query string never reach here (RFC 9700 §2.5).
 */
export async function verifyBearer(header: string | undefined, options: BearerOptions): Promise<AuthInfo> {
  const recalled = recallBearer(header, options);
  if (recalled) return recalled;
  const token = bearerToken(header, options); // throws unless the header is there and well formed
  return lookUpBearer(header as string, token, options);
}

/**
 * `verifyBearer` for a header the gate has not verified before, whose token `bearerToken` took out:
 * the provider's model decides, and the header is remembered for `recallBearer`.
 */
export async function lookUpBearer(header: string, token: string, options: BearerOptions): Promise<AuthInfo> {
  const accessToken = await options.provider.AccessToken.find(token);
  if (!accessToken || accessToken.isExpired) throw unauthorized(options, 'the access token is expired, revoked or unknown');
  if (accessToken.aud !== options.resourceUrl) throw unauthorized(options, 'the access token was issued for another resource');
  if (!accessToken.accountId) throw unauthorized(options, 'the access token has no user');

  const scopes = [...accessToken.scopes];
  const missing = options.requiredScopes.filter((scope) => !scopes.includes(scope));
  if (missing.length > 0) {
    const description = 'the access token lacks a required scope';
    throw new OAuthError('insufficient_scope', description, 403, {
      'www-authenticate': bearerChallenge(options, { code: 'insufficient_scope', description, scope: options.requiredScopes }),
    });
  }
  const auth: AuthInfo = Object.freeze({
    token,
    clientId: accessToken.clientId as string,
    scopes,
    ...(accessToken.exp ? { expiresAt: accessToken.exp } : {}),
    resource: new URL(options.resourceUrl),
    extra: Object.freeze({ accountId: accessToken.accountId, grantId: accessToken.grantId }),
  });
  if (options.tokenExists) remember(options, header, { auth, expiresAt: accessToken.exp });
  return auth;
}

/** Keyed by the whole header as received: a later request with the same header needs no parsing either. */
function remember(options: BearerOptions, header: string, verified: Verified): void {
  let cache = verifiedByGate.get(options);
  if (!cache) {
    cache = new Map();
    verifiedByGate.set(options, cache);
  }
  if (cache.size >= VERIFIED_MAX) cache.delete(cache.keys().next().value as string);
  cache.set(header, verified);
}

/**
 * Step-up (MCP authorization, 2025-11-25 and later): a `tools/call` of a tool whose scope the token
 * lacks is refused with 403 `insufficient_scope` before it reaches the tool. The challenge names every
 * scope the client needs, the ones it holds plus the missing one, so re-authorizing does not drop any.
 */
export function requireToolScope(
  message: unknown,
  auth: AuthInfo,
  options: BearerOptions,
  requiredScope: (tool: string) => string | undefined,
): void {
  if (typeof message !== 'object' || message === null) return;
  const { method, params } = message as { method?: unknown; params?: { name?: unknown } };
  if (method !== 'tools/call' || typeof params?.name !== 'string') return;
  const needed = requiredScope(params.name);
  if (!needed || auth.scopes.includes(needed)) return;
  const description = `the tool ${params.name.slice(0, 64)} needs the scope ${needed}`;
  throw new OAuthError('insufficient_scope', description, 403, {
    'www-authenticate': bearerChallenge(options, { code: 'insufficient_scope', description, scope: [...auth.scopes, needed] }),
  });
}
