import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { connectWithLogin } from '../support/mcp-client.ts';

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
});
