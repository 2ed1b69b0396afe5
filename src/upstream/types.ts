/** Who the upstream says the user is. `subject` is stable and unique per provider (never an email). */
export interface UpstreamIdentity {
  /** Entra: `<tid>/<oid>`; Google: `sub`; OwnerRez: the user id. */
  subject: string;
  email?: string | undefined;
  name?: string | undefined;
}

/** The user's upstream grant. Lives only inside the vault and upstream HTTP calls. */
export interface UpstreamTokens {
  accessToken: string;
  refreshToken?: string | undefined;
  /** Epoch seconds; absent when the upstream did not say (OwnerRez may not). */
  expiresAt?: number | undefined;
  scope?: string | undefined;
  /** The ID token issuer seen at login (Entra multi-tenant: the user's tenant), checked again on refresh. */
  issuer?: string | undefined;
  /** The ID token `sub` seen at login, which userinfo must repeat (OIDC Core §5.3.4). */
  idTokenSubject?: string | undefined;
}

/** Per-login secrets we generate and keep server-side until the callback. */
export interface UpstreamLoginRequest {
  state: string;
  codeVerifier: string;
  nonce: string;
  /** `${PUBLIC_URL}/upstream/<id>/callback`. */
  redirectUri: string;
}

export interface UpstreamLoginResult {
  identity: UpstreamIdentity;
  tokens: UpstreamTokens;
}

/**
 * One identity provider behind Gatehouse (Entra ID, Google, OwnerRez, the embedded demo). Login is
 * two calls: `startLogin` gives the URL to send the browser to, `finishLogin` turns the callback into
 * an identity and tokens. Both throw `UpstreamLoginError` for anything the user should see as a page.
 * The grant calls (`refresh`, `revoke`, `fetchIdentity`) throw `UpstreamGrantError`.
 */
export interface UpstreamProvider {
  readonly id: string;
  /** Shown on the consent page as "Continue with <label>". */
  readonly label: string;
  startLogin(request: UpstreamLoginRequest): Promise<URL>;
  finishLogin(callbackUrl: URL, request: UpstreamLoginRequest): Promise<UpstreamLoginResult>;
  /**
   * Exchanges the refresh token for new tokens. A response without a new refresh token keeps the old
   * one. Absent when the upstream has no refresh grant (OwnerRez): an expired token means reconnect.
   */
  refresh?(tokens: UpstreamTokens): Promise<UpstreamTokens>;
  /** Revokes the grant upstream where the provider can (best effort: the row is shredded either way). */
  revoke?(tokens: UpstreamTokens): Promise<void>;
  /** Email and name as the upstream says them now (for `whoami`); absent where there is no endpoint for it. */
  fetchIdentity?(tokens: UpstreamTokens): Promise<Pick<UpstreamIdentity, 'email' | 'name'>>;
}

/** A login that failed for a reason the user can act on; `message` is safe to show (no tokens). */
export class UpstreamLoginError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamLoginError';
  }
}

/**
 * An upstream grant call that failed. `terminal`: the grant is gone (`invalid_grant`, revoked, no
 * refresh possible) and the user must reconnect. `transient`: down, slow, 5xx or garbage; retry later,
 * nothing is deleted. `message` is safe to show and log (never a token or an upstream body).
 */
export class UpstreamGrantError extends Error {
  readonly kind: 'terminal' | 'transient';
  /** Seconds, for a `Retry-After` header on transient failures. */
  readonly retryAfter: number;
  constructor(kind: 'terminal' | 'transient', message: string, retryAfter = 30) {
    super(message);
    this.name = 'UpstreamGrantError';
    this.kind = kind;
    this.retryAfter = retryAfter;
  }
}
