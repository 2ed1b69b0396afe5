import type { ServerResponse } from 'node:http';
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
 * Rewrites the status of a tool call's JSON response after an upstream failure. Terminal: 401 with the
 * bearer challenge, so the MCP client re-authorizes (its Gatehouse grant was revoked with the upstream
 * one). Transient: 503 with `Retry-After`. The JSON-RPC body still carries the tool's readable message.
 */
export function applyUpstreamOutcome(res: ServerResponse, auth: AuthInfo, challenge: () => string): void {
  const outcome = auth.extra?.[OUTCOME] as Outcome | undefined;
  const writeHead = res.writeHead.bind(res) as (...args: unknown[]) => ServerResponse;
  res.writeHead = ((status: number, ...rest: unknown[]) => {
    const failure = outcome?.failure;
    if (!failure || status !== 200) return writeHead(status, ...rest);
    if (failure.kind === 'terminal') {
      res.setHeader('www-authenticate', challenge());
      return writeHead(401, ...rest);
    }
    res.setHeader('retry-after', String(failure.retryAfter));
    return writeHead(503, ...rest);
  }) as typeof res.writeHead;
}
