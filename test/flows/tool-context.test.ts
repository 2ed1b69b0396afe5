import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createToolContext, currentToolContext, runWithToolContext } from '../../src/mcp/tool-context.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { connectWithLogin } from '../support/mcp-client.ts';

describe('tool call context', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());

  it('keeps each concurrent call in its own context across awaits (AsyncLocalStorage)', async () => {
    const deps = { accounts: { findAccount: () => undefined } as never, grants: {} as never, upstreams: new Map() };
    const contextOf = (accountId: string) =>
      createToolContext(deps, { token: 't', clientId: `client-${accountId}`, scopes: ['mcp'], extra: { accountId } });
    const seen = await Promise.all(
      Array.from({ length: 200 }, (_, index) => {
        const accountId = index % 2 ? 'ada' : 'grace';
        return runWithToolContext(contextOf(accountId), async () => {
          await new Promise((resolve) => setTimeout(resolve, Math.random() * 5));
          await Promise.resolve();
          return [accountId, currentToolContext().accountId, currentToolContext().clientId];
        });
      }),
    );
    for (const [expected, accountId, clientId] of seen) {
      expect(accountId).toBe(expected);
      expect(clientId).toBe(`client-${expected}`);
    }
    expect(() => currentToolContext()).toThrow(/no tool call in progress/);
  });

  it('tells whether an upstream scope was granted, case-insensitively and in its resource-qualified form', async () => {
    const linked = { id: 'u1', provider: 'entra', subject: 's', email: 'ada@example.com', name: null, status: 'ok' as const };
    const contextWith = (scope: string | undefined) =>
      createToolContext(
        {
          accounts: { findAccount: () => ({ id: 'ada', upstream: [linked] }) } as never,
          grants: { freshTokens: async () => ({ accessToken: 'x', scope }) } as never,
          upstreams: new Map(),
        },
        { token: 't', clientId: 'c', scopes: ['mcp'], extra: { accountId: 'ada' } },
      ).upstream('entra');
    expect(await contextWith('openid https://graph.microsoft.com/Calendars.Read').hasUpstreamScope('Calendars.Read')).toBe(true);
    expect(await contextWith('openid calendars.read').hasUpstreamScope('Calendars.Read')).toBe(true);
    expect(await contextWith('openid User.Read').hasUpstreamScope('Calendars.Read')).toBe(false);
    expect(await contextWith('openid Calendars.ReadWrite').hasUpstreamScope('Calendars.Read')).toBe(false);
    // An upstream that did not say which scopes it granted is not refused up front.
    expect(await contextWith(undefined).hasUpstreamScope('Calendars.Read')).toBe(true);
  });

  it('answers 200 interleaved tool calls of two users each with its own caller', async () => {
    const ada = await connectWithLogin(gatehouse.url, { user: { email: 'ada@example.com', name: 'Ada' } });
    const grace = await connectWithLogin(gatehouse.url, { user: { email: 'grace@example.com', name: 'Grace' } });
    const calls = Array.from({ length: 200 }, (_, index) => {
      const [user, email] = index % 2 ? [ada, 'ada@example.com'] : [grace, 'grace@example.com'];
      const name = index % 4 < 2 ? 'whoami' : 'list_connections';
      return user.client.callTool({ name, arguments: {} }).then((result) => ({ email, name, result }));
    });
    for (const { email, name, result } of await Promise.all(calls)) {
      expect(result.isError, name).toBeFalsy();
      const text = JSON.stringify(result.structuredContent);
      expect(text, name).toContain(email);
      expect(text, name).not.toContain(email.startsWith('ada') ? 'grace@example.com' : 'ada@example.com');
    }
    await Promise.all([ada.client.close(), grace.client.close()]);
  });
});
