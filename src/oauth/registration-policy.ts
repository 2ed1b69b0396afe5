import { OAuthError } from '../errors.ts';

/** What a redirect URI is, which decides how oidc-provider must match it. */
export type RedirectUriKind = 'https' | 'loopback' | 'private-use';

export interface RegistrationPolicy {
  readonly supportedScopes: readonly string[];
}

const MAX_URI = 2000;
const MAX_REDIRECT_URIS = 10;
// Loopback hosts as oidc-provider spells them (consts/client_attributes.js LOOPBACKS).
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);
const FORBIDDEN_SCHEMES = new Set(['javascript:', 'data:', 'file:', 'vbscript:', 'blob:', 'about:']);
// Registered network schemes: never private-use, even with a dotted host.
const NETWORK_SCHEMES = new Set(['ftp:', 'ws:', 'wss:']);
// RFC 3986 §2: unreserved, reserved and '%'. Excludes whitespace, controls, non-ASCII, '\', quotes.
const URI_CHARACTERS = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;=%]+$/;

// Known RFC 7591 §2 fields we forward, with their length caps; everything else is dropped.
const STRING_FIELDS: Readonly<Record<string, number>> = {
  client_name: 200,
  client_uri: MAX_URI,
  logo_uri: MAX_URI,
  policy_uri: MAX_URI,
  tos_uri: MAX_URI,
  scope: MAX_URI,
  software_id: 200,
  software_version: 200,
  application_type: MAX_URI,
  token_endpoint_auth_method: MAX_URI,
};
const ARRAY_FIELDS: Readonly<Record<string, number>> = { contacts: 5, grant_types: 10, response_types: 10 };

const APPLICATION_TYPES = new Set(['web', 'native']);
const AUTH_METHODS = new Set(['none', 'client_secret_basic', 'client_secret_post']);
const GRANT_TYPES = new Set(['authorization_code', 'refresh_token']);
const RESPONSE_TYPES = new Set(['code']);

const badMetadata = (description: string) => new OAuthError('invalid_client_metadata', description);

/** A short, RFC 6749 §5.2-safe rendering of a client-supplied value for error descriptions. */
const preview = (value: string) =>
  `'${value.slice(0, 60).replace(/[^\x20-\x21\x23-\x5b\x5d-\x7e]/g, '?')}${value.length > 60 ? '...' : ''}'`;

/**
 * Decides whether `uri` may be registered as a redirect URI and what kind it is.
 * Throws `invalid_redirect_uri` naming the first rule it breaks.
 */
export function classifyRedirectUri(uri: string): RedirectUriKind {
  const refuse = (why: string) => new OAuthError('invalid_redirect_uri', `redirect_uri ${preview(uri)} ${why}`);
  if (uri.length > MAX_URI) throw refuse(`is longer than ${MAX_URI} characters`);
  if (!URI_CHARACTERS.test(uri)) throw refuse('contains whitespace, control or non-URI characters (RFC 3986 section 2)');
  const url = URL.parse(uri);
  if (!url) throw refuse('is not a valid absolute URI');
  if (uri.includes('#')) throw refuse('must not contain a fragment (RFC 6749 section 3.1.2)');
  if (FORBIDDEN_SCHEMES.has(url.protocol)) throw refuse(`must not use the ${url.protocol} scheme`);
  const authority = /^[a-z][a-z0-9+.-]*:\/\/([^/?#]*)/i.exec(uri)?.[1];
  if (url.username || url.password || authority?.includes('@')) throw refuse('must not contain userinfo');
  if (url.hostname.includes('*') || url.pathname.includes('*')) throw refuse('must not contain wildcards');
  // The host must be written as browsers read it: no numeric, percent-encoded or long-form IP tricks.
  if (authority !== undefined && authority.replace(/:\d*$/, '').toLowerCase() !== url.hostname.toLowerCase()) {
    throw refuse('must spell its host in canonical form');
  }
  const loopback = LOOPBACK_HOSTS.has(url.hostname);
  if (url.protocol === 'https:') {
    // RFC 8252 §7.3: loopback redirects use http; oidc-provider refuses https to loopback for native clients.
    if (loopback) throw refuse('must use http:, not https:, for a loopback host (RFC 8252 section 7.3)');
    return 'https';
  }
  if (url.protocol === 'http:') {
    // RFC 8252 §8.3: plain http is acceptable only because a loopback request never leaves the device.
    if (!loopback) throw refuse('may use http: only for localhost, 127.0.0.1 or [::1] (RFC 8252 section 8.3)');
    return 'loopback';
  }
  // RFC 8252 §7.1 wants reverse-DNS private-use schemes (com.example.app:/cb). Cursor registers
  // cursor://anysphere.cursor-mcp/..., naming itself in the authority, so a dotted host also counts.
  const scheme = url.protocol.slice(0, -1);
  if (NETWORK_SCHEMES.has(url.protocol) || !(scheme.includes('.') || url.hostname.includes('.'))) {
    throw refuse('uses a scheme that is neither https, loopback http nor reverse-DNS private-use (RFC 8252 section 7.1)');
  }
  return 'private-use';
}

/** True when every redirect URI is a loopback one, e.g. for the consent page to say "this computer only". */
export function isLoopbackOnly(uris: readonly string[]): boolean {
  return uris.length > 0 && uris.every((uri) => kindOrUndefined(uri) === 'loopback');
}

function kindOrUndefined(uri: string): RedirectUriKind | undefined {
  try {
    return classifyRedirectUri(uri);
  } catch (error) {
    if (error instanceof OAuthError) return undefined;
    throw error;
  }
}

/**
 * The `scope` a client is kept with, given the one its metadata names (registration or metadata
 * document), or undefined for none. A client naming any scope of ours gets all of them: oidc-provider
 * refuses a scope outside the client's at /authorize, so a client registered for "mcp" (the SDK
 * registers the 401 challenge's scope) could never step up to a tool family (MCP 2025-11-25). What a
 * token gets is decided per authorization, with the user's consent. A client naming none of ours
 * (Claude.ai: "claudeai"; documents listing "offline_access") gets no restriction, rather than being
 * refused for scopes Gatehouse does not have.
 */
export function clientScope(scope: string, supportedScopes: readonly string[]): string | undefined {
  return scope.split(/\s+/).some((name) => supportedScopes.includes(name)) ? supportedScopes.join(' ') : undefined;
}

/**
 * Checks a Dynamic Client Registration body (RFC 7591) against Gatehouse's client policy and returns
 * the body to hand to oidc-provider: only known fields, unknown scopes dropped, redirect URIs
 * all-or-nothing, and `application_type: 'native'` wherever oidc-provider needs it to match them.
 */
export function sanitizeRegistration(body: unknown, policy: RegistrationPolicy): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badMetadata('the registration body must be a JSON object');
  }
  const input = body as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  // null counts as absent: some serialisers emit it for unset optional fields.
  for (const [field, max] of Object.entries(STRING_FIELDS)) {
    const value = input[field];
    if (value === undefined || value === null) continue;
    if (typeof value !== 'string') throw badMetadata(`${field} must be a string`);
    if (value.length > max) throw badMetadata(`${field} must be at most ${max} characters`);
    out[field] = value;
  }
  for (const [field, maxItems] of Object.entries(ARRAY_FIELDS)) {
    const value = input[field];
    if (value === undefined || value === null) continue;
    if (!isStringArray(value)) throw badMetadata(`${field} must be an array of strings`);
    if (value.length > maxItems) throw badMetadata(`${field} may list at most ${maxItems} values`);
    if (value.some((item) => item.length > MAX_URI)) throw badMetadata(`${field} values must be at most ${MAX_URI} characters`);
    out[field] = value;
  }

  const redirectUris = checkRedirectUris(input.redirect_uris);

  if (typeof out.scope === 'string') {
    const scope = clientScope(out.scope, policy.supportedScopes);
    if (scope) out.scope = scope;
    else delete out.scope;
  }

  if (out.application_type !== undefined && !APPLICATION_TYPES.has(out.application_type as string)) {
    throw badMetadata('application_type must be web or native');
  }
  // oidc-provider matches loopback redirects on any port (RFC 8252 §7.3) and accepts private-use
  // schemes (RFC 8252 §7.1) only for native clients.
  if (redirectUris.some((uri) => classifyRedirectUri(uri) !== 'https')) out.application_type = 'native';

  if (out.token_endpoint_auth_method !== undefined && !AUTH_METHODS.has(out.token_endpoint_auth_method as string)) {
    throw badMetadata('token_endpoint_auth_method must be none, client_secret_basic or client_secret_post');
  }
  if ((out.grant_types as string[] | undefined)?.some((grant) => !GRANT_TYPES.has(grant))) {
    throw badMetadata('grant_types may only contain authorization_code and refresh_token');
  }
  if ((out.response_types as string[] | undefined)?.some((type) => !RESPONSE_TYPES.has(type))) {
    throw badMetadata('response_types may only contain code');
  }
  return { ...out, redirect_uris: redirectUris };
}

/** RFC 7591 §2: redirect_uris is required for the code flow; one bad URI refuses the registration. */
function checkRedirectUris(value: unknown): string[] {
  if (value === undefined || value === null) throw new OAuthError('invalid_redirect_uri', 'redirect_uris is required');
  if (!isStringArray(value)) throw badMetadata('redirect_uris must be an array of strings');
  if (value.length === 0) throw new OAuthError('invalid_redirect_uri', 'redirect_uris must not be empty');
  if (value.length > MAX_REDIRECT_URIS) throw new OAuthError('invalid_redirect_uri', `redirect_uris may list at most ${MAX_REDIRECT_URIS}`);
  for (const uri of value) classifyRedirectUri(uri);
  return [...new Set(value)];
}

const isStringArray = (value: unknown): value is string[] => Array.isArray(value) && value.every((item) => typeof item === 'string');
