import type { Grants } from './grants.ts';
import { UpstreamGrantError, type UpstreamTokens } from './types.ts';

/**
 * Runs `call` against the upstream with fresh tokens of one of the user's upstream accounts. A call
 * that finds the token rejected (it throws a terminal `UpstreamGrantError`, i.e. the upstream said
 * 401) gets exactly one refresh and one retry; a second rejection retires the grant: reconnect.
 */
export async function withUpstreamTokens<T>(
  grants: Grants,
  accountId: string,
  upstreamAccountId: string,
  call: (tokens: UpstreamTokens) => Promise<T>,
): Promise<T> {
  const rejected = (error: unknown) => error instanceof UpstreamGrantError && error.kind === 'terminal';
  const tokens = await grants.freshTokens(accountId, upstreamAccountId);
  try {
    return await call(tokens);
  } catch (error) {
    if (!rejected(error)) throw error;
  }
  const refreshed = await grants.refreshAfterRejection(accountId, upstreamAccountId, tokens);
  try {
    return await call(refreshed);
  } catch (error) {
    // Refused again right after a refresh: only signing in upstream again can help, so the grant dies
    // and with it the user's Gatehouse grants (the client re-authorizes instead of retrying forever).
    if (rejected(error)) await grants.retire(accountId, upstreamAccountId, refreshed);
    throw error;
  }
}
