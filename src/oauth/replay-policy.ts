import { createHash, timingSafeEqual } from 'node:crypto';
import type Database from 'better-sqlite3';
import { errors, Provider } from 'oidc-provider';
import { type ReplayHooks, revokeGrantEverywhere } from './adapter.ts';

/**
 * A second exchange of one code by the same client with the same verifier inside this window gets
 * `invalid_grant` and leaves the first exchange's tokens alone (ChatGPT has been seen POSTing twice).
 */
export const CODE_RETRY_WINDOW_MS = 10_000;
/**
 * The immediate predecessor of the live refresh token may be used again for this long: a client whose
 * refresh response was lost, or that refreshes twice in parallel (Claude.ai does), keeps its session.
 */
export const REFRESH_GRACE_MS = 30_000;

/** The request parameters oidc-provider has parsed for the call in flight (AsyncLocalStorage). */
function currentRequest(): { clientId: string | undefined; codeVerifier: string | undefined } {
  const oidc = Provider.ctx?.oidc;
  return { clientId: oidc?.client?.clientId, codeVerifier: oidc?.params?.code_verifier as string | undefined };
}

function verifierMatches(verifier: string | undefined, challenge: unknown): boolean {
  if (typeof verifier !== 'string' || typeof challenge !== 'string') return false;
  const expected = Buffer.from(createHash('sha256').update(verifier).digest('base64url'));
  const actual = Buffer.from(challenge);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/**
 * RFC 6749 §4.1.2 / OAuth 2.1 §4.1.3: a replayed code revokes what it issued, and RFC 9700 §4.14.2
 * refresh token reuse detection revokes the grant. Both soften only for the same client retrying at once.
 */
export function createReplayHooks(sqlite: Database.Database): ReplayHooks {
  const isGraceRefresh = (payload: { clientId?: string }, consumedAt: number, supersededAt: number | undefined): boolean =>
    Date.now() - consumedAt <= REFRESH_GRACE_MS && supersededAt === undefined && currentRequest().clientId === payload.clientId;

  return {
    onConsumedFind(model, payload, consumedAt, supersededAt) {
      if (model === 'AuthorizationCode') {
        const { clientId, codeVerifier } = currentRequest();
        const sameClientRetry =
          Date.now() - consumedAt <= CODE_RETRY_WINDOW_MS &&
          clientId === payload.clientId &&
          verifierMatches(codeVerifier, payload.codeChallenge);
        if (sameClientRetry) return 'hide';
        if (payload.grantId) revokeGrantEverywhere(sqlite, payload.grantId);
        return 'reuse';
      }
      if (model === 'RefreshToken' && isGraceRefresh(payload, consumedAt, supersededAt)) return 'allow';
      return 'reuse';
    },
    onConsumeRace(model, payload, consumedAt, supersededAt) {
      return model === 'RefreshToken' && isGraceRefresh(payload, consumedAt, supersededAt);
    },
    raceError: () => new errors.InvalidGrant('authorization code or refresh token already consumed'),
  };
}
