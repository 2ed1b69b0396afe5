import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type Database from 'better-sqlite3';
import type { Commits } from '../db/commits.ts';
import { accountIdOf } from './context.ts';
import type { LimitKind } from './tool-limits.ts';
import type { ToolCallRecord } from './tool-runner.ts';

export type AuditDecision = 'allowed' | 'insufficient_scope' | 'rate_limited_account' | 'rate_limited_client';

/** One row of `tool_audit`, as the operator reads it. */
export interface AuditEntry {
  id: number;
  /** Epoch ms when the call arrived. */
  at: number;
  accountId: string;
  clientId: string;
  tool: string;
  decision: AuditDecision;
  outcome: ToolCallRecord['outcome'] | null;
  upstreamStatus: number | null;
  durationMs: number | null;
}

export interface ToolAudit {
  /** A call that reached its tool (the tool runner's `onToolCall`). */
  recordCall(record: ToolCallRecord): void;
  /** A call refused for step-up: the token lacks the tool's scope (`mcpRoutes`' `onToolDenied`). */
  recordScopeDenial(tool: string, auth: AuthInfo): void;
  /** A call refused by a rate limit (`enforceToolRateLimits`' `onRefused`). */
  recordRateLimited(tool: string, auth: AuthInfo, limit: LimitKind): void;
  /** The latest entries, newest first, of one account or of everyone. */
  list(filter: { accountId?: string | undefined; limit: number }): AuditEntry[];
  /** Deletes entries older than the retention period; returns how many. */
  purge(): number;
  /** Writes the rows still held (also runs on its own every `FLUSH_MS`). */
  flush(): void;
  /** Writes what is left and stops the timer (before the database closes). */
  close(): void;
}

/** How long rows wait in memory before one batch writes them all: what a crash may lose, and how late the CLI sees them. */
export const FLUSH_MS = 100;
/** More rows than this waiting are written at once. */
const HELD_MAX = 1000;

type Row = [number, string, string, string, AuditDecision, string | null, number | null, number | null];

/** MCP 2025-11-25 tool names: 1–128 of A–Z a–z 0–9 _ - . — anything else a client sent is not stored. */
const TOOL_NAME = /^[\w.-]{1,128}$/;
const auditedName = (tool: string): string => (TOOL_NAME.test(tool) ? tool : '(not a tool name)');

/** A client that ignores Retry-After must not turn each refused request into a row on disk. */
const REFUSAL_EVERY_MS = 1000;
const REFUSAL_KEYS_MAX = 10_000;

/**
 * The tool-call audit trail (`tool_audit`): who called which tool through which client, whether it
 * was let through (scope step-up, rate limits), how it ended, the upstream status and how long it
 * took. It records no arguments, results or tokens. Rows are held in memory and written together
 * every `FLUSH_MS` in one group-commit batch (`db/commits.ts`), so no tool call pays for a write of
 * its own (a row per call cost a tenth of a `tools/call`, bench 4 vs 4b); a tool's response is not held
 * for its row, and a crash loses at most the rows of the last `FLUSH_MS`.
 */
export function createToolAudit(
  sqlite: Database.Database,
  commits: Pick<Commits, 'writeEventually'>,
  options: { retentionDays: number; clock?: () => number },
): ToolAudit {
  const clock = options.clock ?? Date.now;
  const insert = sqlite.prepare<Row>(
    `INSERT INTO tool_audit (at, account_id, client_id, tool, decision, outcome, upstream_status, duration_ms)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const columns = `id, at, account_id AS accountId, client_id AS clientId, tool, decision, outcome,
    upstream_status AS upstreamStatus, duration_ms AS durationMs`;
  const latest = sqlite.prepare<[number], AuditEntry>(`SELECT ${columns} FROM tool_audit ORDER BY id DESC LIMIT ?`);
  const latestOf = sqlite.prepare<[string, number], AuditEntry>(
    `SELECT ${columns} FROM tool_audit WHERE account_id = ? ORDER BY at DESC LIMIT ?`,
  );
  // Rows are appended in arrival order, so the old ones are a prefix in rowid order: the scan stops at
  // the first young row, and `at` needs no index of its own (every insert would pay for one).
  const purgeOlder = sqlite.prepare<[number]>(
    `DELETE FROM tool_audit WHERE id < coalesce(
       (SELECT id FROM tool_audit WHERE at >= ? ORDER BY id LIMIT 1), (SELECT max(id) + 1 FROM tool_audit))`,
  );

  let held: Row[] = [];
  const insertAll = sqlite.transaction((rows: readonly Row[]) => {
    for (const row of rows) insert.run(...row);
  });
  const flush = (): void => {
    if (held.length === 0) return;
    const rows = held;
    // Inside the batch transaction better-sqlite3 runs this as a savepoint: all rows or none.
    commits.writeEventually(() => insertAll(rows));
    held = [];
  };
  const hold = (row: Row): void => {
    held.push(row);
    if (held.length >= HELD_MAX) flush();
  };
  // Rows that could not be written (the database busy past busy_timeout) are tried again on the next tick.
  const timer = setInterval(() => {
    try {
      flush();
    } catch {}
  }, FLUSH_MS);
  timer.unref();

  const lastRefusal = new Map<string, number>();
  const refusalDue = (key: string, now: number): boolean => {
    const last = lastRefusal.get(key);
    if (last !== undefined && now - last < REFUSAL_EVERY_MS) return false;
    if (lastRefusal.size >= REFUSAL_KEYS_MAX) lastRefusal.clear();
    lastRefusal.set(key, now);
    return true;
  };

  /** At most one row per second per refusal, account and client. */
  const recordRefusal = (tool: string, auth: AuthInfo, decision: Exclude<AuditDecision, 'allowed'>): void => {
    const now = clock();
    const accountId = accountIdOf(auth);
    if (!refusalDue(`${decision}\n${accountId}\n${auth.clientId}`, now)) return;
    hold([now, accountId, auth.clientId, auditedName(tool), decision, null, null, null]);
  };

  return {
    recordCall({ tool, accountId, clientId, outcome, upstreamStatus, durationMs }) {
      const at = clock() - durationMs;
      hold([at, accountId, clientId, auditedName(tool), 'allowed', outcome, upstreamStatus ?? null, durationMs]);
    },
    recordScopeDenial: (tool, auth) => recordRefusal(tool, auth, 'insufficient_scope'),
    recordRateLimited: (tool, auth, limit) => recordRefusal(tool, auth, `rate_limited_${limit}`),
    list({ accountId, limit }) {
      flush();
      return accountId === undefined ? latest.all(limit) : latestOf.all(accountId, limit);
    },
    purge() {
      flush();
      return purgeOlder.run(clock() - options.retentionDays * 86_400_000).changes;
    },
    flush,
    close() {
      clearInterval(timer);
      flush();
    },
  };
}
