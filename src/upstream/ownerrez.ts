import { type Config, ConfigError } from '../config.ts';
import { UPSTREAM_TIMEOUT_MS, upstreamFetch } from './http.ts';
import { UpstreamGrantError, type UpstreamIdentity, UpstreamLoginError, type UpstreamProvider, type UpstreamTokens } from './types.ts';

type OwnerRezConfig = NonNullable<Config['upstreams']['ownerrez']>;

const LABEL = 'OwnerRez';
const UNREADABLE = 'OwnerRez could not be reached or gave an answer Gatehouse did not understand';
const REFUSED_CODE = 'OwnerRez refused the sign-in code. Start again.';
const RECONNECT = 'OwnerRez no longer accepts this connection (expired or revoked). Sign in with OwnerRez again to reconnect.';

// Each OwnerRez quirk below is a named constant so a change upstream is one edit (DESIGN.md §5).

/** Token endpoint, under OWNERREZ_API_URL (api.ownerrez.com, not the app.ownerrez.com authorize host). */
const TOKEN_PATH = '/oauth/access_token';
/** Revocation: `DELETE /oauth/access_token/{token}` with the app's Basic credentials (not RFC 7009). */
const REVOKE_PATH = '/oauth/access_token/';
/** The identity endpoint: OwnerRez has no id_token and no userinfo, only its own API. */
const USERS_ME_PATH = '/v2/users/me';
/**
 * Where `/v2/users/me` keeps what we read. The v2 API is snake_case (`first_name`, `last_name` as on
 * its guests); the email's field name could not be confirmed from OwnerRez's own reference, so the
 * first of these that holds a string wins.
 */
const USER_EMAIL_FIELDS = ['email_address', 'email'] as const;
/**
 * Revoking an unknown token answers 404 at OwnerRez: the token is gone either way, which is all a
 * revocation wants.
 */
const REVOKE_DONE_STATUSES = new Set([404]);
/**
 * 403 from the API means "no User-Agent", `ip_blocked`, `account_locked` or `account_closed`: none
 * of them proves the grant is dead, and a terminal error would delete it, so 403 is transient.
 */
const FORBIDDEN_KIND: UpstreamGrantError['kind'] = 'transient';

export interface OwnerRezProviderOptions {
  /** Per-call upstream timeout; tests shorten it to exercise a slow OwnerRez. */
  timeoutMs?: number;
}

/**
 * OwnerRez as an upstream: plain OAuth 2 authorization code (RFC 6749 §4.1) with no discovery, no
 * id_token, no PKCE and no refresh grant. `state` is the only per-login binding it supports. An
 * expired or revoked token cannot be renewed: the user reconnects.
 */
export function createOwnerRezProvider(config: OwnerRezConfig, options: OwnerRezProviderOptions = {}): UpstreamProvider {
  const basic = buildBasicAuthorization(config);
  const timeoutMs = options.timeoutMs ?? UPSTREAM_TIMEOUT_MS;
  const call = (path: string, init: RequestInit) => upstreamFetch(LABEL, `${config.apiUrl}${path}`, init, timeoutMs);

  async function fetchIdentity(tokens: UpstreamTokens): Promise<UpstreamIdentity> {
    const response = await call(USERS_ME_PATH, {
      headers: { authorization: `Bearer ${tokens.accessToken}`, accept: 'application/json' },
    });
    if (response.status === 200) return readUser(await readJson(response));
    await discard(response);
    if (response.status === 401) throw new UpstreamGrantError('terminal', RECONNECT);
    if (response.status === 403)
      throw new UpstreamGrantError(FORBIDDEN_KIND, 'OwnerRez refused the request (account locked or this server blocked)');
    throw new UpstreamGrantError('transient', UNREADABLE);
  }

  return {
    id: 'ownerrez',
    label: 'OwnerRez',
    async startLogin({ state, redirectUri }) {
      // OwnerRez takes no scope, no PKCE and no nonce: the app's scope is fixed when it is registered.
      const url = new URL(config.authorizeUrl);
      url.searchParams.set('response_type', 'code');
      url.searchParams.set('client_id', config.clientId);
      url.searchParams.set('redirect_uri', redirectUri);
      url.searchParams.set('state', state);
      return url;
    },
    async finishLogin(callbackUrl, request) {
      const code = callbackUrl.searchParams.get('code');
      if (!code) throw new UpstreamLoginError('OwnerRez did not send a sign-in code. Start again.');
      const tokens = await exchangeCode(code, request.redirectUri);
      let identity: UpstreamIdentity;
      try {
        identity = await fetchIdentity(tokens.tokens);
      } catch (error) {
        if (error instanceof UpstreamGrantError && error.kind === 'terminal') throw new UpstreamLoginError(REFUSED_CODE);
        throw error;
      }
      if (tokens.userId !== undefined && tokens.userId !== identity.subject) {
        throw new UpstreamLoginError('OwnerRez answered for a different user than the one who signed in. Start again.');
      }
      return { identity, tokens: tokens.tokens };
    },
    fetchIdentity,
    async revoke(tokens) {
      const response = await call(`${REVOKE_PATH}${encodeURIComponent(tokens.accessToken)}`, {
        method: 'DELETE',
        headers: { authorization: basic },
      });
      await discard(response);
      if (response.ok || REVOKE_DONE_STATUSES.has(response.status)) return;
      throw new UpstreamGrantError('transient', 'OwnerRez did not confirm the revocation');
    },
  };

  async function exchangeCode(code: string, redirectUri: string): Promise<ExchangedTokens> {
    const form = new URLSearchParams({ grant_type: 'authorization_code', code });
    // RFC 6749 §4.1.3 requires redirect_uri here; reports on OwnerRez disagree, hence the switch.
    if (config.sendRedirectUriOnExchange) form.set('redirect_uri', redirectUri);
    const response = await call(TOKEN_PATH, {
      method: 'POST',
      headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: form,
    });
    if (response.status === 400 || response.status === 401) {
      const body = await readJson(response).catch(() => undefined);
      throw new UpstreamLoginError(refusalMessage(body));
    }
    if (response.status !== 200) {
      await discard(response);
      throw new UpstreamGrantError('transient', UNREADABLE);
    }
    return readTokenResponse(await readJson(response), Date.now());
  }
}

/**
 * The token endpoint's client authentication, built by hand: `base64(client_id ":" client_secret)`
 * of the raw values. RFC 6749 §2.3.1 says to form-encode both first, and libraries do; OwnerRez
 * compares the raw `c_…`/`s_…` strings, so any encoded character would fail as invalid_client.
 */
function buildBasicAuthorization(config: OwnerRezConfig): string {
  // RFC 7617 §2: the user-id of Basic credentials cannot contain a colon.
  if (config.clientId.includes(':')) throw new ConfigError('OWNERREZ_CLIENT_ID', 'must not contain ":"');
  return `Basic ${Buffer.from(`${config.clientId}:${config.clientSecret}`, 'utf8').toString('base64')}`;
}

/** What the user sees when OwnerRez refuses the exchange; only our own fixed sentences, never its text. */
function refusalMessage(body: unknown): string {
  const error = isObject(body) && typeof body.error === 'string' ? body.error : undefined;
  if (error === 'invalid_client' || error === 'unauthorized_client') {
    return 'OwnerRez did not accept Gatehouse’s app credentials. Tell the operator of this server.';
  }
  return REFUSED_CODE;
}

export interface ExchangedTokens {
  tokens: UpstreamTokens;
  /** The token response's `user_id`, as a string, when OwnerRez sent one. */
  userId: string | undefined;
}

/**
 * Validates a token response strictly: `access_token` a non-empty string, `token_type` bearer (any
 * case, RFC 6749 §5.1), `expires_in` absent or a positive number of seconds, `user_id` absent or an
 * id. `null` counts as absent (OwnerRez's .NET serializer may emit it). There is never a refresh token.
 * Anything else is a transient error: the code is spent, but nothing about the user was refused.
 */
export function readTokenResponse(body: unknown, now: number): ExchangedTokens {
  if (!isObject(body)) throw new UpstreamGrantError('transient', UNREADABLE);
  const { access_token: accessToken, token_type: tokenType, expires_in: expiresIn, user_id: userId, scope } = body;
  if (typeof accessToken !== 'string' || accessToken === '') throw new UpstreamGrantError('transient', UNREADABLE);
  if (typeof tokenType !== 'string' || tokenType.toLowerCase() !== 'bearer') throw new UpstreamGrantError('transient', UNREADABLE);
  if (expiresIn != null && !(typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn > 0)) {
    throw new UpstreamGrantError('transient', UNREADABLE);
  }
  const id = userId == null ? undefined : readId(userId);
  return {
    tokens: {
      accessToken,
      expiresAt: typeof expiresIn === 'number' ? Math.floor(now / 1000) + Math.floor(expiresIn) : undefined,
      scope: typeof scope === 'string' && scope !== '' ? scope : undefined,
    },
    userId: id,
  };
}

/** `/v2/users/me` → identity: the numeric user id is the subject; email and first + last name when present. */
export function readUser(body: unknown): UpstreamIdentity {
  if (!isObject(body)) throw new UpstreamGrantError('transient', UNREADABLE);
  const subject = readId(body.id);
  const email = USER_EMAIL_FIELDS.map((field) => body[field]).find((value): value is string => typeof value === 'string');
  const name = [body.first_name, body.last_name]
    .filter((part): part is string => typeof part === 'string')
    .map((part) => part.trim())
    .filter(Boolean)
    .join(' ');
  return { subject, email: email?.trim() || undefined, name: name || undefined };
}

/** OwnerRez ids are positive integers; a non-empty digit string is accepted as the same id. */
function readId(value: unknown): string {
  if (typeof value === 'number' && Number.isSafeInteger(value) && value > 0) return String(value);
  if (typeof value === 'string' && /^[1-9][0-9]{0,18}$/.test(value)) return value;
  throw new UpstreamGrantError('transient', UNREADABLE);
}

/** Reads a JSON body; a body that breaks off or is not JSON is an answer we did not understand. */
async function readJson(response: Response): Promise<unknown> {
  let text: string;
  try {
    text = await response.text();
  } catch {
    throw new UpstreamGrantError('transient', UNREADABLE);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new UpstreamGrantError('transient', UNREADABLE);
  }
}

/** Frees the connection of a response whose body we do not read (an already broken body is fine). */
async function discard(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
