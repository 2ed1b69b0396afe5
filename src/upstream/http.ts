import { UpstreamGrantError } from './types.ts';

/** Every upstream call ends within this (DESIGN.md: about 10 s), so a slow IdP never hangs a request. */
export const UPSTREAM_TIMEOUT_MS = 10_000;

/** Names Gatehouse on every upstream call (OwnerRez requires a User-Agent naming the app). */
export const USER_AGENT = 'Gatehouse/0.1.0 (MCP authorization server)';

/**
 * `fetch` with Gatehouse's User-Agent and a timeout. Network failures and timeouts become a transient
 * `UpstreamGrantError` whose message names only the upstream, never the URL's query or a token.
 */
export async function upstreamFetch(
  label: string,
  url: string | URL,
  init: RequestInit = {},
  timeoutMs = UPSTREAM_TIMEOUT_MS,
): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set('user-agent', USER_AGENT);
  try {
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = init.signal ? AbortSignal.any([init.signal, timeout]) : timeout;
    return await fetch(url, { ...init, headers, redirect: 'manual', signal });
  } catch (cause) {
    const timedOut = cause instanceof Error && (cause.name === 'TimeoutError' || cause.name === 'AbortError');
    throw new UpstreamGrantError('transient', `${label} ${timedOut ? 'did not answer in time' : 'could not be reached'}`);
  }
}
