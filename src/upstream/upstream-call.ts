import type { Grants } from './grants.ts';
import { UpstreamGrantError, type UpstreamTokens } from './types.ts';

/**
 * Runs `call` against the upstream with fresh tokens of one of the user's upstream accounts. A call
 * that finds the token rejected (it throws a terminal `UpstreamGrantError`, i.e. the upstream said
 * 401) gets exactly one refresh and one retry; a second rejection means the user must reconnect.
 */
export async function withUpstreamTokens<T>(
  grants: Grants,
  accountId: string,
  upstreamAccountId: string,
  call: (tokens: UpstreamTokens) => Promise<T>,
): Promise<T> {
  const tokens = await grants.freshTokens(accountId, upstreamAccountId);
  try {
    return await call(tokens);
  } catch (error) {
    if (!(error instanceof UpstreamGrantError) || error.kind !== 'terminal') throw error;
    return call(await grants.refreshAfterRejection(accountId, upstreamAccountId, tokens));
  }
}
