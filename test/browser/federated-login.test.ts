import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { launchBrowser } from '../support/browser.ts';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import { type FakeOwnerRez, startFakeOwnerRez } from '../support/fake-ownerrez.ts';
import { ENTRA_CLIENT, federationEnv, GOOGLE_CLIENT, OWNERREZ_CLIENT } from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';

describe('consent page with Entra ID, Google and OwnerRez enabled, and a federated sign-in in headless Chromium', () => {
  let browser: Browser;
  let entra: FakeOidc;
  let google: FakeOidc;
  let ownerrez: FakeOwnerRez;
  let gatehouse: TestGatehouse;
  /** The MCP client's loopback redirect URI (RFC 8252): a real server that records what reaches it. */
  let clientApp: Server;
  let redirectUri: string;
  const arrivals: URL[] = [];
  let clientId: string;
  let context: BrowserContext;
  let page: Page;

  beforeAll(async () => {
    clientApp = createServer((request, response) => {
      arrivals.push(new URL(request.url ?? '/', redirectUri));
      response.writeHead(200, { 'content-type': 'text/plain' }).end('You can close this window.');
    });
    await new Promise<void>((resolve) => clientApp.listen(0, '127.0.0.1', resolve));
    redirectUri = `http://127.0.0.1:${(clientApp.address() as AddressInfo).port}/callback`;

    [browser, entra, google, ownerrez] = await Promise.all([
      launchBrowser(),
      startFakeOidc({ shape: 'entra', clientId: ENTRA_CLIENT.id, clientSecret: ENTRA_CLIENT.secret }),
      startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret }),
      startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret }),
    ]);
    gatehouse = await startGatehouse(federationEnv({ entra, google, ownerrez }));

    const registration = await fetch(`${gatehouse.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Browser MCP Client', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }),
    });
    expect(registration.status).toBe(201);
    clientId = ((await registration.json()) as { client_id: string }).client_id;
  });
  afterAll(async () => {
    await browser?.close();
    await gatehouse?.close();
    await Promise.all([entra?.close(), google?.close(), ownerrez?.close()]);
    await new Promise<void>((resolve) => (clientApp ? clientApp.close(() => resolve()) : resolve()));
  });

  beforeEach(async () => {
    context = await browser.newContext();
    page = await context.newPage();
  });
  afterEach(async () => context?.close());

  /** An OAuth 2.1 authorization request with PKCE S256, state and the RFC 8707 resource. */
  const authorizationRequest = () => {
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(16).toString('base64url');
    const url = new URL('/authorize', gatehouse.url);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      redirect_uri: redirectUri,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      state,
      scope: 'mcp',
      resource: `${gatehouse.url}/mcp`,
    }).toString();
    return { url: url.href, verifier, state };
  };

  it('lists a button for each enabled provider on the consent page (Microsoft, Google, OwnerRez) and no demo sign-in', async () => {
    const response = await page.goto(authorizationRequest().url);
    expect(response?.status()).toBe(200);
    expect(new URL(page.url()).pathname).toMatch(/^\/interaction\/[^/]+$/);
    const buttons = page.locator('button[name="provider"]');
    expect(await buttons.allTextContents()).toEqual(['Continue with Microsoft', 'Continue with Google', 'Continue with OwnerRez']);
    for (const label of ['Microsoft', 'Google', 'OwnerRez']) {
      expect(await page.getByRole('button', { name: `Continue with ${label}` }).isVisible()).toBe(true);
    }
    expect(await page.getByRole('button', { name: 'Continue with Demo sign-in' }).count()).toBe(0);
  });

  const cases = [
    { provider: 'entra', label: 'Microsoft', authorizePath: () => new URL(`${entra.issuer}/oauth2/v2.0/authorize`) },
    { provider: 'google', label: 'Google', authorizePath: () => new URL(`${google.issuer}/o/oauth2/v2/auth`) },
    { provider: 'ownerrez', label: 'OwnerRez', authorizePath: () => new URL(ownerrez.authorizeUrl) },
  ];
  for (const { provider, label, authorizePath } of cases) {
    it(`signs in with ${label}: the browser reaches the fake ${label}, comes back through the callback and lands at the redirect URI with a code and iss that buy a token for whoami`, async () => {
      const email = `browser-${provider}@example.com`;
      if (provider === 'entra') entra.user = { email, name: 'Browser Entra' };
      if (provider === 'google') google.user = { email, name: 'Browser Google' };
      if (provider === 'ownerrez') ownerrez.user = { id: 4242, email, firstName: 'Browser', lastName: 'OwnerRez' };
      const visited: URL[] = [];
      page.on('request', (request) => {
        if (request.isNavigationRequest()) visited.push(new URL(request.url()));
      });

      const request = authorizationRequest();
      await page.goto(request.url);
      await page.getByRole('button', { name: `Continue with ${label}` }).click();
      await page.waitForURL((url) => url.href.startsWith(redirectUri));

      // Consent → the fake IdP's authorization endpoint → Gatehouse's callback → the client.
      const upstream = authorizePath();
      const atUpstream = visited.findIndex((url) => url.origin === upstream.origin && url.pathname === upstream.pathname);
      const atCallback = visited.findIndex((url) => url.href.startsWith(`${gatehouse.url}/upstream/${provider}/callback?`));
      expect(atUpstream).toBeGreaterThan(-1);
      expect(atCallback).toBeGreaterThan(atUpstream);
      expect(visited[atUpstream]?.searchParams.get('redirect_uri')).toBe(`${gatehouse.url}/upstream/${provider}/callback`);

      const landed = new URL(page.url());
      expect(`${landed.origin}${landed.pathname}`).toBe(redirectUri);
      expect(landed.searchParams.get('state')).toBe(request.state);
      expect(landed.searchParams.get('iss')).toBe(gatehouse.config.publicUrl);
      const code = landed.searchParams.get('code');
      expect(code).toBeTruthy();
      // The client's own server received that code (Chromium asks it for /favicon.ico as well).
      expect(
        arrivals
          .filter((url) => url.pathname === '/callback')
          .at(-1)
          ?.searchParams.get('code'),
      ).toBe(code);
      expect(await page.locator('body').textContent()).toContain('You can close this window.');

      const response = await fetch(`${gatehouse.url}/token`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          grant_type: 'authorization_code',
          code: String(code),
          code_verifier: request.verifier,
          redirect_uri: redirectUri,
          client_id: clientId,
          resource: `${gatehouse.url}/mcp`,
        }),
      });
      expect(response.status).toBe(200);
      const tokens = (await response.json()) as { access_token: string; token_type: string };
      expect(tokens.token_type).toBe('Bearer');

      // Signed in: the token is this user's, as whoami says with the identity read upstream.
      const transport = new StreamableHTTPClientTransport(new URL('/mcp', gatehouse.url), {
        requestInit: { headers: { authorization: `Bearer ${tokens.access_token}` } },
      });
      const client = new Client({ name: 'browser-test', version: '1.0.0' });
      await client.connect(transport);
      const result = await client.callTool({ name: 'whoami', arguments: {} });
      expect(result.isError).toBeFalsy();
      expect(result.structuredContent).toMatchObject({ provider, identities: [{ provider, email, status: 'ok', live: true }] });
      await client.close();
    });
  }
});
