import type { Config } from '../config.ts';
import { createOidcClient } from './oidc.ts';
import { UpstreamLoginError, type UpstreamProvider } from './types.ts';

type GoogleConfig = NonNullable<Config['upstreams']['google']>;

const OIDC_SCOPES = ['openid', 'email', 'profile'];

/**
 * Google. A refresh token comes only with `access_type=offline`, and again on a later login only with
 * `prompt=consent` (DESIGN.md §5). Users are keyed by `sub`; GOOGLE_ALLOWED_DOMAINS limits sign-in to
 * Workspace domains by the `hd` claim (consumer accounts have none). Disconnect revokes at Google.
 */
export function createGoogleProvider(config: GoogleConfig): UpstreamProvider {
  const label = 'Google';
  const oidc = createOidcClient({ label, ...config, tokenAuth: 'client_secret_post' });
  const scopes = [...OIDC_SCOPES, ...config.scopes];
  const allowedDomains = new Set(config.allowedDomains);
  // With exactly one domain, `hd` preselects it in Google's account chooser; the claim is still checked.
  const domainHint: Record<string, string> = config.allowedDomains.length === 1 ? { hd: config.allowedDomains[0] as string } : {};

  return {
    id: 'google',
    label,
    startLogin: (request) => oidc.authorizationUrl(request, scopes, { access_type: 'offline', prompt: 'consent', ...domainHint }),

    async finishLogin(callbackUrl, request) {
      const { tokens, claims } = await oidc.exchangeCode(callbackUrl, request);
      if (!claims?.sub) throw new UpstreamLoginError('Google did not say who signed in.');
      const hd = typeof claims.hd === 'string' ? claims.hd.toLowerCase() : undefined;
      if (allowedDomains.size > 0 && (!hd || !allowedDomains.has(hd)))
        throw new UpstreamLoginError('This Gatehouse accepts only Google Workspace accounts of allowed domains.');
      return {
        identity: { subject: claims.sub, email: stringClaim(claims.email), name: stringClaim(claims.name) },
        tokens,
      };
    },

    // No scope on refresh: Google then returns the grant's full scope, never a narrower token.
    refresh: (tokens) => oidc.refresh(tokens),

    async revoke(tokens) {
      // Revoking the refresh token ends the whole grant at Google, access tokens included.
      await oidc.revoke(tokens.refreshToken ?? tokens.accessToken);
    },

    async fetchIdentity(tokens) {
      const info = await oidc.userInfo(tokens);
      return { email: stringClaim(info.email), name: stringClaim(info.name) };
    },
  };
}

const stringClaim = (value: unknown): string | undefined => (typeof value === 'string' && value ? value : undefined);
