import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Storage } from '../../src/db/index.ts';
import { createToolAudit } from '../../src/mcp/audit.ts';

const DAY = 86_400_000;
let storage: Storage | undefined;
let dir: string | undefined;

afterEach(() => {
  storage?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
  storage = dir = undefined;
});

function auditAt(retentionDays = 90) {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-audit-'));
  storage = openDatabase(join(dir, 'gatehouse.db'));
  const clock = { now: 1_800_000_000_000 };
  return { audit: createToolAudit(storage.sqlite, storage.commits, { retentionDays, clock: () => clock.now }), clock };
}

const auth = (accountId: string, clientId = 'client-1'): AuthInfo => ({
  token: 'never-stored',
  clientId,
  scopes: ['mcp'],
  extra: { accountId },
});
const call = (accountId: string, tool = 'whoami') =>
  ({ tool, accountId, clientId: 'client-1', outcome: 'ok', upstreamStatus: 200, durationMs: 40 }) as const;

describe('tool-call audit trail', () => {
  it('records a finished call with the time it arrived, and refusals without an outcome', () => {
    const { audit, clock } = auditAt();
    audit.recordCall(call('ada'));
    audit.recordScopeDenial('google_calendar_list_events', auth('ada'));
    audit.recordRateLimited('whoami', auth('ada', 'client-2'), 'client');
    expect(audit.list({ accountId: 'ada', limit: 10 }).reverse()).toEqual([
      {
        id: 1,
        at: clock.now - 40,
        accountId: 'ada',
        clientId: 'client-1',
        tool: 'whoami',
        decision: 'allowed',
        outcome: 'ok',
        upstreamStatus: 200,
        durationMs: 40,
      },
      {
        id: 2,
        at: clock.now,
        accountId: 'ada',
        clientId: 'client-1',
        tool: 'google_calendar_list_events',
        decision: 'insufficient_scope',
        outcome: null,
        upstreamStatus: null,
        durationMs: null,
      },
      {
        id: 3,
        at: clock.now,
        accountId: 'ada',
        clientId: 'client-2',
        tool: 'whoami',
        decision: 'rate_limited_client',
        outcome: null,
        upstreamStatus: null,
        durationMs: null,
      },
    ]);
  });

  it('stores at most one refusal per second per decision, account and client (a client ignoring Retry-After cannot fill the disk)', () => {
    const { audit, clock } = auditAt();
    for (let i = 0; i < 50; i++) audit.recordRateLimited('whoami', auth('ada'), 'account');
    audit.recordRateLimited('whoami', auth('grace'), 'account');
    audit.recordScopeDenial('whoami', auth('ada'));
    clock.now += 1000;
    audit.recordRateLimited('whoami', auth('ada'), 'account');
    expect(audit.list({ limit: 100 }).map((row) => `${row.accountId} ${row.decision}`)).toEqual([
      'ada rate_limited_account',
      'ada insufficient_scope',
      'grace rate_limited_account',
      'ada rate_limited_account',
    ]);
  });

  it('keeps a tool name a client sent only when it is a valid MCP tool name', () => {
    const { audit } = auditAt();
    audit.recordRateLimited('x'.repeat(129), auth('ada'), 'account');
    audit.recordScopeDenial('whoami\u001b[2J secret=abc', auth('ada'));
    expect(audit.list({ limit: 10 }).map((row) => row.tool)).toEqual(['(not a tool name)', '(not a tool name)']);
  });

  it('lists one account newest first, or everyone', () => {
    const { audit, clock } = auditAt();
    for (const accountId of ['ada', 'grace', 'ada', 'ada']) {
      audit.recordCall(call(accountId, `tool_${clock.now % 7}`));
      clock.now += 1000;
    }
    expect(audit.list({ accountId: 'ada', limit: 2 }).map((row) => row.id)).toEqual([4, 3]);
    expect(audit.list({ limit: 10 }).map((row) => row.id)).toEqual([4, 3, 2, 1]);
    expect(audit.list({ accountId: 'nobody', limit: 10 })).toEqual([]);
  });

  it('purges entries older than the retention period and nothing younger', () => {
    const { audit, clock } = auditAt(90);
    const start = clock.now;
    for (const age of [100, 91, 90.5, 89, 1]) {
      clock.now = start - age * DAY;
      audit.recordCall({ ...call('ada'), durationMs: 0 });
    }
    clock.now = start;
    expect(audit.purge()).toBe(3);
    expect(audit.list({ limit: 10 }).map((row) => Math.round((start - row.at) / DAY))).toEqual([1, 89]);
    expect(audit.purge()).toBe(0);
    clock.now = start + 100 * DAY;
    expect(audit.purge()).toBe(2);
    expect(audit.purge()).toBe(0);
  });

  it('purges by walking rowid order, not by an index on the time column', () => {
    auditAt();
    const plan = storage?.sqlite
      .prepare('EXPLAIN QUERY PLAN SELECT id FROM tool_audit WHERE at >= ? ORDER BY id LIMIT 1')
      .all(0)
      .map((row) => (row as { detail: string }).detail);
    expect(plan).toEqual(['SCAN tool_audit']);
    const byAccount = storage?.sqlite
      .prepare('EXPLAIN QUERY PLAN SELECT id FROM tool_audit WHERE account_id = ? ORDER BY at DESC LIMIT 5')
      .all('ada')
      .map((row) => (row as { detail: string }).detail);
    expect(byAccount?.join()).toMatch(/USING (COVERING )?INDEX tool_audit_account/);
  });
});
