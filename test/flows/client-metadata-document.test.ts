import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFakeOidc } from '../support/fake-oidc.ts';
import { federationEnv, GOOGLE_CLIENT } from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { type HttpsHost, startHttpsHost } from '../support/https-host.ts';
import { connectWithLogin, TestOAuthClient } from '../support/mcp-client.ts';
import { authorizationRequest, LOOPBACK_REDIRECT } from '../support/oauth.ts';

const metadata = {
  client_name: 'Metadata Document Client',
  redirect_uris: [LOOPBACK_REDIRECT],
  grant_types: ['authorization_code', 'refresh_token'],
  response_types: ['code'],
  token_endpoint_auth_method: 'none',
};

describe('Client ID Metadata Documents (URL client_ids)', () => {
  let host: HttpsHost;
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    host = await startHttpsHost();
    // The SSRF guard refuses loopback addresses; only tests lift it, to host the document on 127.0.0.1.
    gatehouse = await startGatehouse({}, { dangerouslyFetchClientMetadata: host.fetch });
  });
  afterAll(async () => {
    await gatehouse?.close();
    await host?.close();
  });

  it('lets the MCP SDK client use its metadata URL as client_id, with no registration, through to whoami', async () => {
    const clientId = `${host.origin}/oauth/client.json`;
    host.serve('/oauth/client.json', { client_id: clientId, ...metadata });
    const oauth = new TestOAuthClient(metadata, clientId);
    const { client } = await connectWithLogin(gatehouse.url, { oauth, user: { email: 'cimd@example.com', name: 'Cim D' } });
    expect(oauth.clientInfo?.client_id).toBe(clientId);
    const result = await client.callTool({ name: 'whoami', arguments: {} });
    expect(result.structuredContent).toMatchObject({ identities: [{ email: 'cimd@example.com' }] });
    expect(host.hits('/oauth/client.json')).toBeGreaterThanOrEqual(1);
    await client.close();
  });

  it.each([
    ['scopes Gatehouse does not have', 'read write offline_access'],
    ['only the base scope', 'mcp'],
  ])('signs in a client whose document names %s, as registration does', async (_name, scope) => {
    const clientId = `${host.origin}/oauth/scoped-${scope.length}.json`;
    host.serve(`/oauth/scoped-${scope.length}.json`, { client_id: clientId, ...metadata, scope });
    const oauth = new TestOAuthClient({ ...metadata, scope }, clientId);
    const { client } = await connectWithLogin(gatehouse.url, { oauth, user: { email: 'scoped@example.com', name: 'Scoped' } });
    expect((await client.callTool({ name: 'whoami', arguments: {} })).structuredContent).toMatchObject({
      identities: [{ email: 'scoped@example.com' }],
    });
    await client.close();
  });

  it('lets a client whose document names only "mcp" ask for a tool family too (step-up), as registration does', async () => {
    const google = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret });
    const withGoogle = await startGatehouse(federationEnv({ google }), { dangerouslyFetchClientMetadata: host.fetch });
    try {
      const clientId = `${host.origin}/oauth/base-only.json`;
      host.serve('/oauth/base-only.json', { client_id: clientId, ...metadata, scope: 'mcp' });
      const ask = (scope: string) => fetch(authorizationRequest(withGoogle.url, { clientId, scope }).url, { redirect: 'manual' });
      // The consent interaction, not invalid_scope: the document's "mcp" stands for every scope of Gatehouse's.
      const stepUp = await ask('mcp google.calendar');
      expect(stepUp.status).toBe(303);
      expect(stepUp.headers.get('location')).toMatch(/^\/interaction\//);
    } finally {
      await withGoogle.close();
      await google.close();
    }
  });

  it('refuses a document whose client_id differs from its URL', async () => {
    const clientId = `${host.origin}/oauth/mismatch.json`;
    host.serve('/oauth/mismatch.json', { ...metadata, client_id: `${host.origin}/oauth/other.json` });
    const response = await fetch(authorizationRequest(gatehouse.url, { clientId }).url, { redirect: 'manual' });
    expect(response.status).toBe(400);
    expect(await response.text()).toContain('invalid_client');
  });

  it('refuses a redirect_uri that the document does not list', async () => {
    const clientId = `${host.origin}/oauth/listed.json`;
    host.serve('/oauth/listed.json', { client_id: clientId, ...metadata });
    const response = await fetch(authorizationRequest(gatehouse.url, { clientId, redirectUri: 'http://127.0.0.1:9/elsewhere' }).url, {
      redirect: 'manual',
    });
    expect(response.status).toBe(400);
    expect(response.headers.get('location')).toBeNull();
  });

  it('refuses a document that asks for a shared-secret client authentication', async () => {
    const clientId = `${host.origin}/oauth/secret.json`;
    host.serve('/oauth/secret.json', { client_id: clientId, ...metadata, token_endpoint_auth_method: 'client_secret_post' });
    const response = await fetch(authorizationRequest(gatehouse.url, { clientId }).url, { redirect: 'manual' });
    expect(response.status).toBe(400);
  });

  it('never fetches a metadata document from a loopback address without the test-only override (SSRF guard)', async () => {
    const guarded = await startGatehouse();
    try {
      const clientId = `${host.origin}/oauth/guarded.json`;
      host.serve('/oauth/guarded.json', { client_id: clientId, ...metadata });
      const response = await fetch(authorizationRequest(guarded.url, { clientId }).url, { redirect: 'manual' });
      expect(response.status).toBe(400);
      expect(host.hits('/oauth/guarded.json')).toBe(0);
    } finally {
      await guarded.close();
    }
  });
});
