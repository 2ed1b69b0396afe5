import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { connectWithLogin } from '../support/mcp-client.ts';

/**
 * oidc-provider's default introspection policy answers any confidential client, and anyone can
 * self-register one through DCR: without our policy, a token holder would learn its account, client
 * and expiry without using it (and without tripping refresh-token reuse detection).
 */
describe('/introspect answers only for tokens the calling client owns (RFC 7662 §4)', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());

  it("says another client's tokens are inactive to a self-registered confidential client", async () => {
    const { oauth, client } = await connectWithLogin(gatehouse.url);
    await client.close();
    const registered = await fetch(`${gatehouse.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'Nosy',
        redirect_uris: ['https://nosy.example/cb'],
        token_endpoint_auth_method: 'client_secret_post',
      }),
    });
    const nosy = (await registered.json()) as { client_id: string; client_secret: string };
    for (const token of [oauth.savedTokens?.access_token, oauth.savedTokens?.refresh_token]) {
      const response = await fetch(`${gatehouse.url}/introspect`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token: String(token), client_id: nosy.client_id, client_secret: nosy.client_secret }).toString(),
      });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ active: false });
    }
  });
});
