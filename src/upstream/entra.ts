import type { Config } from '../config.ts';
import { createOidcClient } from './oidc.ts';
import { UpstreamLoginError, type UpstreamProvider } from './types.ts';

type EntraConfig = NonNullable<Config['upstreams']['entra']>;

/** Always asked for: identity, and a refresh token (Entra issues one only for `offline_access`). */
const OIDC_SCOPES = ['openid', 'profile', 'email', 'offline_access'];

/**
 * Microsoft Entra ID (v2 endpoints). Users are keyed by `tid` + `oid` (DESIGN.md §5: `sub` is pairwise
 * per app and `email` is not verified), and only tenants on the allow-list get in: a multi-tenant
 * issuer would otherwise admit every Microsoft organisation. Entra has no RFC 7009 revocation.
 */
export function createEntraProvider(config: EntraConfig): UpstreamProvider {
  const label = 'Microsoft';
  const oidc = createOidcClient({ label, ...config, tokenAuth: 'client_secret_post' });
  const scopes = [...OIDC_SCOPES, ...config.scopes];
  const allowed = new Set(config.allowedTenants);

  return {
    id: 'entra',
    label,
    // select_account: a signed-in user linking a second Microsoft account must be able to pick it.
    startLogin: (request) => oidc.authorizationUrl(request, scopes, { prompt: 'select_account' }),

    async finishLogin(callbackUrl, request) {
      const { tokens, claims } = await oidc.exchangeCode(callbackUrl, request);
      const tid = typeof claims?.tid === 'string' ? claims.tid.toLowerCase() : undefined;
      const oid = typeof claims?.oid === 'string' ? claims.oid : undefined;
      if (!tid || !oid) throw new UpstreamLoginError('Microsoft did not say which organisation and user signed in.');
      if (!allowed.has(tid)) throw new UpstreamLoginError('Your Microsoft organisation is not allowed to use this Gatehouse.');
      const email = stringClaim(claims?.email) ?? stringClaim(claims?.preferred_username);
      return { identity: { subject: `${tid}/${oid}`, email, name: stringClaim(claims?.name) }, tokens };
    },

    // Entra's v2 refresh names the scopes again (a token is for one resource: the first API scope's).
    refresh: (tokens) => oidc.refresh(tokens, scopes),

    async fetchIdentity(tokens) {
      const info = await oidc.userInfo(tokens);
      return { email: stringClaim(info.email) ?? stringClaim(info.preferred_username), name: stringClaim(info.name) };
    },
  };
}

const stringClaim = (value: unknown): string | undefined => (typeof value === 'string' && value ? value : undefined);
