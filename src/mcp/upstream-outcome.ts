import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { UpstreamGrantError } from '../upstream/types.ts';

/** Where a tool call leaves the upstream failure that decides the HTTP status of its response. */
const OUTCOME = 'upstreamOutcome';

interface Outcome {
  failure?: UpstreamGrantError;
}

/** A per-request copy of the gate's AuthInfo with room for an outcome (the verified-token cache shares AuthInfo objects). */
export function withOutcomeSlot(auth: AuthInfo): AuthInfo {
  return { ...auth, extra: { ...auth.extra, [OUTCOME]: {} satisfies Outcome } };
}

/** Called by a tool whose upstream failed: the response becomes 401 (grant dead) or 503 (retry later). */
export function reportUpstreamFailure(authInfo: AuthInfo | undefined, failure: UpstreamGrantError): void {
  const outcome = authInfo?.extra?.[OUTCOME] as Outcome | undefined;
  if (outcome && (!outcome.failure || failure.kind === 'terminal')) outcome.failure = failure;
}

/**
 * The status of a tool call's JSON response after an upstream failure, or undefined for none (200).
 * Terminal: 401 with the bearer challenge, so the MCP client re-authorizes (its Gatehouse grant was
 * revoked with the upstream one). Transient: 503 with `Retry-After`. The JSON-RPC body still carries
 * the tool's readable message.
 */
export function upstreamOutcomeStatus(
  auth: AuthInfo,
  challenge: () => string,
): { status: number; headers: Record<string, string> } | undefined {
  const failure = (auth.extra?.[OUTCOME] as Outcome | undefined)?.failure;
  if (!failure) return undefined;
  if (failure.kind === 'terminal') return { status: 401, headers: { 'www-authenticate': challenge() } };
  return { status: 503, headers: { 'retry-after': String(failure.retryAfter) } };
}
