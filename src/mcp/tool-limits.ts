import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type Database from 'better-sqlite3';
import type { Commits } from '../db/commits.ts';
import { OAuthError } from '../errors.ts';
import { accountIdOf } from './context.ts';

export type LimitKind = 'account' | 'client';

/** Allowed, or which limit refused the call and in how many seconds the next call would pass. */
export type LimitDecision = { allowed: true } | { allowed: false; limit: LimitKind; perMinute: number; retryAfter: number };

export interface ToolRateLimiter {
  /** Counts one tool call against both limits, or neither: a call refused by one limit spends nothing. */
  takeToolCall(accountId: string, clientId: string): LimitDecision;
  /** Deletes the rows of keys whose budget is full again (they mean the same as no row). */
  purgeIdle(): number;
}

const MINUTE_US = 60_000_000;

/**
 * Per-account and per-client tool-call limits as GCRA (a token bucket kept as one timestamp): a key
 * may burst `perMinute` calls, then gets one call every `60 s / perMinute`. Unlike a fixed window, a
 * burst at a window edge cannot double the rate: the budget refills call by call, not all at once on the minute.
 *
 * State lives in SQLite (`tool_rate_limits`), so a restart does not reset it. Each key costs one
 * upsert that decides and records at once; both keys run in one savepoint, so the decision is exact
 * under concurrency in this process (better-sqlite3 is synchronous) and across processes sharing the
 * file (the write joins the group-commit batch, which holds SQLite's write lock until it commits).
 * No response waits for that commit: a crash can lose at most the latest counts
 * (`db/commits.ts`), which lets a few calls more through, never fewer.
 */
export function createToolRateLimiter(
  sqlite: Database.Database,
  commits: Pick<Commits, 'writeEventually'>,
  limits: { readonly perAccount: number; readonly perClient: number },
  clock: () => number = Date.now,
): ToolRateLimiter {
  // Integer microseconds: exact sums, and 1 000 000 calls per minute still gets a 60 µs interval.
  const policies = {
    account: policy(limits.perAccount),
    client: policy(limits.perClient),
  };
  // Allowed: the row moves one interval later and comes back. Refused: no row changes and none comes back.
  const take = sqlite.prepare<[{ kind: LimitKind; key: string; now: number; interval: number; window: number }], { full_at: number }>(
    `INSERT INTO tool_rate_limits (kind, key, full_at) VALUES (@kind, @key, @now + @interval)
     ON CONFLICT (kind, key) DO UPDATE SET full_at = max(full_at, @now) + @interval WHERE max(full_at, @now) + @interval - @now <= @window
     RETURNING full_at`,
  );
  const fullAt = sqlite.prepare<[string, string], number>('SELECT full_at FROM tool_rate_limits WHERE kind = ? AND key = ?').pluck();
  const purge = sqlite.prepare<[number]>('DELETE FROM tool_rate_limits WHERE full_at <= ?');

  const refusal = (kind: LimitKind, key: string, now: number): LimitDecision => {
    const { intervalUs, windowUs, perMinute } = policies[kind];
    const waitUs = (fullAt.get(kind, key) ?? now) + intervalUs - now - windowUs;
    return { allowed: false, limit: kind, perMinute, retryAfter: Math.max(1, Math.ceil(waitUs / 1_000_000)) };
  };
  const takeOne = (kind: LimitKind, key: string, now: number): boolean => {
    const { intervalUs: interval, windowUs: window } = policies[kind];
    return take.get({ kind, key, now, interval, window }) !== undefined;
  };
  class Refused extends Error {}
  // Inside the batch transaction better-sqlite3 runs this as a savepoint, one atomic write for commits.write:
  // throwing undoes the account's count.
  const takeBoth = sqlite.transaction((accountId: string, clientId: string, now: number): LimitDecision => {
    if (!takeOne('account', accountId, now)) return refusal('account', accountId, now);
    if (!takeOne('client', clientId, now)) throw new Refused();
    return { allowed: true };
  });

  return {
    takeToolCall(accountId, clientId) {
      const now = clock() * 1000;
      try {
        return commits.writeEventually(() => takeBoth(accountId, clientId, now));
      } catch (error) {
        if (!(error instanceof Refused)) throw error;
        return refusal('client', clientId, now);
      }
    },
    purgeIdle: () => purge.run(clock() * 1000).changes,
  };
}

/** GCRA parameters for `perMinute` calls: one call per interval, a burst of `perMinute` at most. */
function policy(perMinute: number): { perMinute: number; intervalUs: number; windowUs: number } {
  const intervalUs = Math.floor(MINUTE_US / perMinute);
  return { perMinute, intervalUs, windowUs: intervalUs * perMinute };
}

/**
 * The `beforeToolCall` of the MCP routes: a call over either limit is refused with 429 and
 * `Retry-After` in seconds (RFC 6585 §4, RFC 9110 §10.2.3), before it reaches the tool.
 */
export function enforceToolRateLimits(
  limiter: ToolRateLimiter,
  onRefused?: (tool: string, auth: AuthInfo, limit: LimitKind) => void,
): (tool: string, auth: AuthInfo) => void {
  return (tool, auth) => {
    const decision = limiter.takeToolCall(accountIdOf(auth), auth.clientId);
    if (decision.allowed) return;
    onRefused?.(tool, auth, decision.limit);
    const { limit, perMinute, retryAfter } = decision;
    throw new OAuthError('rate_limited', `this ${limit} may make ${perMinute} tool calls per minute; retry in ${retryAfter} s`, 429, {
      'retry-after': String(retryAfter),
    });
  };
}
