import { createHash, randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { answerRequestsTo, launchBrowser } from '../support/browser.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';

const CLIENT_ORIGIN = 'https://app.example.com';
const REDIRECT_URI = `${CLIENT_ORIGIN}/oauth/callback`;
const isCallback = (url: URL) => url.origin === CLIENT_ORIGIN;

describe('consent page and demo sign-in in headless Chromium', () => {
  let browser: Browser;
  let gatehouse: TestGatehouse;
  let clientId: string;
  let context: BrowserContext;
  let page: Page;
  let consoleErrors: string[];

  /** Dynamic client registration (RFC 7591) of a public client, as MCP clients do it. */
  const registerClient = async (redirectUri: string): Promise<string> => {
    const response = await fetch(`${gatehouse.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ client_name: 'Browser Test App', redirect_uris: [redirectUri], token_endpoint_auth_method: 'none' }),
    });
    expect(response.status).toBe(201);
    return ((await response.json()) as { client_id: string }).client_id;
  };

  /** An OAuth 2.1 authorization request with PKCE S256 and an RFC 8707 resource. */
  const authorizationRequest = (redirectUri = REDIRECT_URI, client = clientId) => {
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(16).toString('base64url');
    const url = new URL('/authorize', gatehouse.url);
    url.search = new URLSearchParams({
      response_type: 'code',
      client_id: client,
      redirect_uri: redirectUri,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      state,
      resource: `${gatehouse.url}/mcp`,
    }).toString();
    return { url: url.href, verifier, state };
  };

  /** Consent with the demo provider, then the demo sign-in form; resolves where the browser was sent. */
  const signIn = async (authorizeUrl: string): Promise<URL> => {
    await page.goto(authorizeUrl);
    await page.getByRole('button', { name: 'Continue with Demo sign-in' }).click();
    await page.waitForURL((url) => url.pathname === '/upstream/demo/login');
    await page.getByLabel('Email').fill('ada@example.com');
    await page.getByLabel('Name').fill('Ada Lovelace');
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL(isCallback);
    return new URL(page.url());
  };

  beforeAll(async () => {
    [browser, gatehouse] = await Promise.all([launchBrowser(), startGatehouse()]);
    clientId = await registerClient(REDIRECT_URI);
  });
  afterAll(async () => {
    await browser?.close();
    await gatehouse?.close();
  });

  beforeEach(async () => {
    context = await browser.newContext();
    page = await context.newPage();
    await answerRequestsTo(page, CLIENT_ORIGIN); // app.example.com does not exist
    consoleErrors = [];
    page.on('console', (message) => {
      if (message.type() === 'error') consoleErrors.push(message.text());
    });
    page.on('pageerror', (error) => consoleErrors.push(error.message));
  });
  afterEach(async () => context?.close());

  it('shows the client name, the redirect host, the unverified notice and the provider button before leaving Gatehouse', async () => {
    const response = await page.goto(authorizationRequest().url);
    expect(new URL(page.url()).pathname).toMatch(/^\/interaction\/[^/]+$/);
    expect(response?.status()).toBe(200);
    const headers = response?.headers() ?? {};
    expect(headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(headers['x-frame-options']).toBe('DENY');
    expect(headers['referrer-policy']).toBe('no-referrer');
    expect(headers['cache-control']).toBe('no-store');

    await expect(page.locator('h1').textContent()).resolves.toContain('Browser Test App');
    const host = page.locator('.destination-host');
    await expect(host.textContent()).resolves.toBe('app.example.com');
    expect(await host.isVisible()).toBe(true);
    expect(await page.getByText('Gatehouse has not verified this app.').isVisible()).toBe(true);
    expect(await page.getByRole('button', { name: 'Continue with Demo sign-in' }).isVisible()).toBe(true);
    expect(await page.getByText('Only a program on this device').count()).toBe(0);

    // The stylesheet applied under the page's own CSP: the host is set apart in bold, larger type.
    const style = await host.evaluate((element) => {
      const own = getComputedStyle(element);
      const body = getComputedStyle(document.body);
      return { weight: own.fontWeight, size: Number.parseFloat(own.fontSize), bodySize: Number.parseFloat(body.fontSize) };
    });
    expect(style.weight).toBe('700');
    expect(style.size).toBeGreaterThan(style.bodySize);
    expect(consoleErrors).toEqual([]);
  });

  it('returns a code, the state and the issuer (RFC 9207) after the demo sign-in, and the code buys an access token', async () => {
    const request = authorizationRequest();
    const landed = await signIn(request.url);
    expect(`${landed.origin}${landed.pathname}`).toBe(REDIRECT_URI);
    expect(landed.searchParams.get('state')).toBe(request.state);
    expect(landed.searchParams.get('iss')).toBe(gatehouse.config.publicUrl);
    const code = landed.searchParams.get('code');
    expect(code).toBeTruthy();

    const response = await fetch(`${gatehouse.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: String(code),
        code_verifier: request.verifier,
        redirect_uri: REDIRECT_URI,
        client_id: clientId,
        resource: `${gatehouse.url}/mcp`,
      }),
    });
    expect(response.status).toBe(200);
    const tokens = (await response.json()) as { access_token?: string; token_type?: string; scope?: string };
    expect(tokens.access_token).toEqual(expect.any(String));
    expect(tokens.token_type).toBe('Bearer');
    expect(tokens.scope).toBe('mcp');
  });

  it('returns access_denied with the state and the issuer when the user cancels', async () => {
    const request = authorizationRequest();
    await page.goto(request.url);
    await page.getByRole('button', { name: 'Cancel' }).click();
    await page.waitForURL(isCallback);
    const landed = new URL(page.url());
    expect(`${landed.origin}${landed.pathname}`).toBe(REDIRECT_URI);
    expect(landed.searchParams.get('error')).toBe('access_denied');
    expect(landed.searchParams.get('state')).toBe(request.state);
    expect(landed.searchParams.get('iss')).toBe(gatehouse.config.publicUrl);
    expect(landed.searchParams.has('code')).toBe(false);
  });

  describe('refuses a consent POST without the CSRF token', () => {
    let attacker: Server;
    let attackerUrl: string;
    let targetUid = '';
    beforeAll(async () => {
      // Another origin (127.0.0.1, not localhost) whose page auto-submits an approval with no _csrf.
      attacker = createServer((_request, response) => {
        const action = `${gatehouse.url}/interaction/${encodeURIComponent(targetUid)}/approve`;
        response.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        response.end(
          `<!doctype html><form method="post" action="${action}"><input type="hidden" name="provider" value="demo"></form>` +
            '<script>document.forms[0].submit()</script>',
        );
      });
      await new Promise<void>((resolve) => attacker.listen(0, '127.0.0.1', resolve));
      attackerUrl = `http://127.0.0.1:${(attacker.address() as AddressInfo).port}/`;
    });
    afterAll(async () => new Promise<void>((resolve) => attacker?.close(() => resolve())));

    it('answers 403 with an error page to a cross-site form post, and the browser never reaches the sign-in page', async () => {
      const visited: string[] = [];
      page.on('request', (request) => visited.push(request.url()));
      await page.goto(authorizationRequest().url);
      targetUid = decodeURIComponent(new URL(page.url()).pathname.split('/')[2] ?? '');
      expect(targetUid).not.toBe('');
      expect((await context.cookies()).map((cookie) => cookie.name)).toContain('_interaction');

      const refused = page.waitForResponse((response) => response.url().endsWith('/approve'));
      await page.goto(attackerUrl);
      expect((await refused).status()).toBe(403);
      await page.waitForLoadState();
      await expect(page.locator('h1').textContent()).resolves.toBe('Request refused');
      await expect(page.locator('main').textContent()).resolves.toContain('was not sent from this page');
      expect(visited.filter((url) => url.includes('/upstream/'))).toEqual([]);
    });

    it('answers 403 to a same-site post with a wrong _csrf value', async () => {
      await page.goto(authorizationRequest().url);
      await page.locator('form:has(button[name="provider"]) input[name="_csrf"]').evaluate((input) => {
        (input as HTMLInputElement).value = 'forged';
      });
      const refused = page.waitForResponse((response) => response.url().endsWith('/approve'));
      await page.getByRole('button', { name: 'Continue with Demo sign-in' }).click();
      expect((await refused).status()).toBe(403);
      await expect(page.locator('h1').textContent()).resolves.toBe('Request refused');
      expect(new URL(page.url()).pathname).not.toBe('/upstream/demo/login');
    });
  });

  it('lets a returning user with an approved client pass silently to the redirect URI with a code', async () => {
    await signIn(authorizationRequest().url);
    const pages: string[] = [];
    page.on('response', (response) => {
      if (response.request().isNavigationRequest()) pages.push(`${response.status()} ${new URL(response.url()).pathname}`);
    });
    const again = authorizationRequest();
    await page.goto(again.url);
    const landed = new URL(page.url());
    expect(`${landed.origin}${landed.pathname}`).toBe(REDIRECT_URI);
    expect(landed.searchParams.get('state')).toBe(again.state);
    expect(landed.searchParams.get('code')).toBeTruthy();
    // Only redirects on the way: no consent page, no sign-in page.
    expect(pages.filter((line) => !line.startsWith('3'))).toEqual(['200 /oauth/callback']);
  });

  it('warns that only a program on this device receives access when every redirect URI is loopback', async () => {
    const loopback = 'http://127.0.0.1:8123/callback';
    const loopbackClient = await registerClient(loopback);
    await page.goto(authorizationRequest(loopback, loopbackClient).url);
    expect(await page.getByText('Only a program on this device will receive access.').isVisible()).toBe(true);
    await expect(page.locator('.destination-host').textContent()).resolves.toBe('127.0.0.1:8123');
  });
});
