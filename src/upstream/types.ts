/** Who the upstream says the user is. `subject` is stable and unique per provider (never an email). */
export interface UpstreamIdentity {
  subject: string;
  email?: string | undefined;
  name?: string | undefined;
}

/** The user's upstream grant. Lives only inside the vault and upstream HTTP calls. */
export interface UpstreamTokens {
  accessToken: string;
  refreshToken?: string | undefined;
  /** Epoch seconds. */
  expiresAt?: number | undefined;
  scope?: string | undefined;
}

/** Per-login secrets we generate and keep server-side until the callback. */
export interface UpstreamLoginRequest {
  state: string;
  codeVerifier: string;
  nonce: string;
  /** `${PUBLIC_URL}/upstream/<id>/callback`. */
  redirectUri: string;
}

/**
 * One identity provider behind Gatehouse (Entra ID, Google, OwnerRez, the embedded demo). Login is
 * two calls: `startLogin` gives the URL to send the browser to, `finishLogin` turns the callback into
 * an identity and tokens. Both throw `UpstreamLoginError` for anything the user should see as a page.
 */
export interface UpstreamProvider {
  readonly id: string;
  /** Shown on the consent page as "Continue with <label>". */
  readonly label: string;
  startLogin(request: UpstreamLoginRequest): Promise<URL>;
  finishLogin(callbackUrl: URL, request: UpstreamLoginRequest): Promise<{ identity: UpstreamIdentity; tokens: UpstreamTokens }>;
  /** The identity as the upstream says it now (for `whoami`); providers without an endpoint return what login stored. */
  fetchIdentity?(tokens: UpstreamTokens): Promise<UpstreamIdentity>;
}

/** A login that failed for a reason the user can act on; `message` is safe to show (no tokens). */
export class UpstreamLoginError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UpstreamLoginError';
  }
}
