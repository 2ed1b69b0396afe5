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
  /** Writes the state of every key that changed since the last write (also runs on its own every `SYNC_MS`). */
  sync(): void;
  /** Forgets the keys whose budget is full again, here and on disk (they mean the same as no row). */
  purgeIdle(): number;
  /** Writes what is left and stops the timer (before the database closes). */
  close(): void;
}

const MINUTE_US = 60_000_000;
/** How often changed state is written: what a crash may lose, and how late another process sharing the file sees it. */
export const SYNC_MS = 100;

interface Bucket {
  kind: LimitKind;
  key: string;
  /** GCRA: when the key's budget is full again (epoch µs); a call is allowed while it stays within the window. */
  fullAt: number;
  /** Calls allowed since the last write. */
  granted: number;
  /** The row's value as this process last read or wrote it (undefined: no row). */
  stored: number | undefined;
}

/**
 * Per-account and per-client tool-call limits as GCRA (a token bucket kept as one timestamp): a key
 * may burst `perMinute` calls, then gets one call every `60 s / perMinute`. Unlike a fixed window, a
 * burst at a window edge cannot double the rate: the budget refills call by call, not all at once on the minute.
 *
 * Decisions are made in memory, exactly, and the state is written to `tool_rate_limits` every
 * `SYNC_MS` (one batch for every key that changed), so a restart does not reset a limit. An earlier
 * version decided with an SQLite upsert per call: exact across processes too, but it cost a quarter of
 * a `tools/call` (bench 4 vs 4b). A key is read from disk when first seen; a write that finds the row
 * changed by another process sharing the file adds this process's calls to it and takes the sum. So
 * processes sharing one file learn of each other's calls when they next write theirs: together they
 * can exceed a limit by what each allows in one `SYNC_MS` before that. A crash loses at most the calls
 * of the last `SYNC_MS`.
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
  const read = sqlite.prepare<[LimitKind, string], number>('SELECT full_at FROM tool_rate_limits WHERE kind = ? AND key = ?').pluck();
  // Nobody else wrote the row since this process did: it gets this process's exact value.
  const overwrite = sqlite.prepare<{ kind: LimitKind; key: string; fullAt: number; stored: number | null }>(
    'UPDATE tool_rate_limits SET full_at = @fullAt WHERE kind = @kind AND key = @key AND full_at IS @stored',
  );
  // A new row, or one another process changed: its value plus this process's calls since the last write.
  const merge = sqlite
    .prepare<{ kind: LimitKind; key: string; fullAt: number; now: number; spent: number }, number>(
      `INSERT INTO tool_rate_limits (kind, key, full_at) VALUES (@kind, @key, @fullAt)
       ON CONFLICT (kind, key) DO UPDATE SET full_at = max(full_at, @now) + @spent
       RETURNING full_at`,
    )
    .pluck();
  const purge = sqlite.prepare<[number]>('DELETE FROM tool_rate_limits WHERE full_at <= ?');

  const buckets = new Map<string, Bucket>();
  const changed = new Set<Bucket>();
  const bucketOf = (kind: LimitKind, key: string): Bucket => {
    const id = `${kind}\n${key}`;
    let bucket = buckets.get(id);
    if (!bucket) {
      const stored = read.get(kind, key);
      bucket = { kind, key, fullAt: stored ?? 0, granted: 0, stored };
      buckets.set(id, bucket);
    }
    return bucket;
  };
  /** When the budget is full again if one more call is allowed now, or undefined when the call is refused. */
  const next = (bucket: Bucket, now: number): number | undefined => {
    const { intervalUs, windowUs } = policies[bucket.kind];
    const fullAt = Math.max(bucket.fullAt, now) + intervalUs;
    return fullAt - now <= windowUs ? fullAt : undefined;
  };
  const refusal = (bucket: Bucket, now: number): LimitDecision => {
    const { intervalUs, windowUs, perMinute } = policies[bucket.kind];
    const waitUs = bucket.fullAt + intervalUs - now - windowUs;
    return { allowed: false, limit: bucket.kind, perMinute, retryAfter: Math.max(1, Math.ceil(waitUs / 1_000_000)) };
  };

  /** The rows' new values; the buckets learn them only once the write committed into the batch. */
  const writeChanged = sqlite.transaction((pending: readonly Bucket[], now: number): number[] =>
    pending.map(({ kind, key, fullAt, granted, stored }) => {
      if (stored !== undefined && overwrite.run({ kind, key, fullAt, stored }).changes === 1) return fullAt;
      return merge.get({ kind, key, fullAt, now, spent: granted * policies[kind].intervalUs }) as number;
    }),
  );
  const sync = (): void => {
    if (changed.size === 0) return;
    const pending = [...changed];
    // Inside the batch transaction better-sqlite3 runs this as a savepoint: all keys or none.
    const written = commits.writeEventually(() => writeChanged(pending, clock() * 1000));
    pending.forEach((bucket, i) => {
      const value = written[i] as number;
      bucket.fullAt = Math.max(bucket.fullAt, value);
      bucket.stored = value;
      bucket.granted = 0;
      changed.delete(bucket);
    });
  };
  // A write that failed (the database busy past busy_timeout) is tried again on the next tick.
  const timer = setInterval(() => {
    try {
      sync();
    } catch {}
  }, SYNC_MS);
  timer.unref();

  return {
    takeToolCall(accountId, clientId) {
      const now = clock() * 1000;
      const account = bucketOf('account', accountId);
      const client = bucketOf('client', clientId);
      const accountNext = next(account, now);
      if (accountNext === undefined) return refusal(account, now);
      const clientNext = next(client, now);
      if (clientNext === undefined) return refusal(client, now);
      for (const [bucket, fullAt] of [
        [account, accountNext],
        [client, clientNext],
      ] as const) {
        bucket.fullAt = fullAt;
        bucket.granted++;
        changed.add(bucket);
      }
      return { allowed: true };
    },
    sync,
    purgeIdle() {
      sync();
      const now = clock() * 1000;
      for (const [id, bucket] of buckets) if (bucket.fullAt <= now) buckets.delete(id);
      return purge.run(now).changes;
    },
    close() {
      clearInterval(timer);
      sync();
    },
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
