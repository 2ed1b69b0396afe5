import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { approveWithDemoLogin, connectWithLogin } from '../support/mcp-client.ts';
import { authorizationRequest, registerClient } from '../support/oauth.ts';
import { UserAgent } from '../support/user-agent.ts';

describe('MCP client through the whole OAuth 2.1 flow with the demo login', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());

  it('goes from a 401 through discovery, DCR, consent, demo login and token to a whoami tool call', async () => {
    const { client, oauth } = await connectWithLogin(gatehouse.url, { user: { email: 'ada@example.com', name: 'Ada Lovelace' } });
    const tools = await client.listTools();
    expect(tools.tools.map((tool) => tool.name)).toContain('whoami');
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(result.isError).toBeFalsy();
    expect(result.structuredContent).toMatchObject({
      provider: 'demo',
      identities: [{ provider: 'demo', email: 'ada@example.com', name: 'Ada Lovelace', status: 'ok' }],
    });
    expect(oauth.savedTokens?.refresh_token).toBeTruthy();
    expect(oauth.savedTokens?.expires_in).toBe(900);
    await client.close();
  });

  it('sends a returning browser straight to the only provider for a client it approved before, and shows consent for any other', async () => {
    const origin = gatehouse.url;
    const approved = await registerClient(origin);
    const agent = new UserAgent();
    const first = await approveWithDemoLogin(agent, origin, authorizationRequest(origin, { clientId: approved.client_id }).url, {
      email: 'returning@example.com',
      name: 'Returning',
    });
    expect(first.searchParams.get('code')).toBeTruthy();
    // The Gatehouse session ends (cookie expiry); the browser's memory of the approval stays.
    agent.forgetCookies(/^_session/);
    const again = await agent.follow(authorizationRequest(origin, { clientId: approved.client_id }).url, origin);
    expect(again.url).toMatch(/\/upstream\/demo\/login\?state=/);

    const other = await registerClient(origin, { client_name: 'Never approved' });
    const consent = await agent.follow(authorizationRequest(origin, { clientId: other.client_id }).url, origin);
    expect(consent.url).toMatch(/\/interaction\//);
    expect(await consent.response.text()).toContain('Never approved');
  });
});
