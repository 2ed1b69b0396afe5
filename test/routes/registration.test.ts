import Database from 'better-sqlite3';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import { buildTestApp } from '../support/gatehouse.ts';

const INSPECTOR = 'http://localhost:6274';
const base = { client_name: 'Route Test', redirect_uris: ['https://app.example.com/callback'], token_endpoint_auth_method: 'none' };

interface TestApp {
  app: FastifyInstance;
  config: Config;
  host: string;
}

async function startApp(): Promise<TestApp> {
  const { app, config } = await buildTestApp();
  return { app, config, host: new URL(config.publicUrl).host };
}

/** Client rows in the database file, read through a separate read-only connection. */
function countClients(databasePath: string): number {
  const db = new Database(databasePath, { readonly: true, fileMustExist: true });
  try {
    return db.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM oidc_models WHERE model = 'Client'").get()?.n ?? -1;
  } finally {
    db.close();
  }
}

const register = ({ app, host }: TestApp, body: unknown, headers: Record<string, string> = {}) =>
  app.inject({
    method: 'POST',
    url: '/register',
    headers: { host, 'content-type': 'application/json', ...headers },
    payload: typeof body === 'string' ? body : JSON.stringify(body),
  });

/** A refused request answers `status` with an RFC 6749 §5.2 body naming `error`. */
function expectOAuthError(response: LightMyRequestResponse, status: number, error: string): void {
  expect(response.statusCode).toBe(status);
  expect(response.headers['content-type']).toMatch(/^application\/json/);
  const body = response.json();
  expect(body.error).toBe(error);
  expect(typeof body.error_description).toBe('string');
}

describe('POST /register accepts what MCP clients send (RFC 7591 §3.2.1)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(async () => t?.app.close());

  it('answers 201 and echoes every registered field, redirect_uris included', async () => {
    const body = {
      client_name: 'Everything Client',
      redirect_uris: ['https://app.example.com/callback', 'https://app.example.com/other'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      scope: 'mcp',
      client_uri: 'https://app.example.com/',
      logo_uri: 'https://app.example.com/logo.png',
      policy_uri: 'https://app.example.com/policy',
      tos_uri: 'https://app.example.com/tos',
      contacts: ['ops@example.com'],
      software_id: 'everything-client',
      software_version: '2.0.1',
    };
    const response = await register(t, body);
    expect(response.statusCode).toBe(201);
    expect(response.headers['cache-control']).toBe('no-store');
    const client = response.json();
    expect(client).toMatchObject(body);
    expect(client.client_id).toEqual(expect.any(String));
    expect(client).not.toHaveProperty('client_secret');
  });

  it('returns a registration_client_uri and registration_access_token that read the registration back (RFC 7592)', async () => {
    const client = (await register(t, base)).json();
    expect(client.registration_client_uri).toBe(`${t.config.publicUrl}/register/${client.client_id}`);
    expect(client.registration_access_token).toEqual(expect.any(String));

    const read = await t.app.inject({
      method: 'GET',
      url: new URL(client.registration_client_uri).pathname,
      headers: { host: t.host, authorization: `Bearer ${client.registration_access_token}` },
    });
    expect(read.statusCode).toBe(200);
    expect(read.json()).toMatchObject({ client_id: client.client_id, redirect_uris: base.redirect_uris, client_name: base.client_name });
  });

  it('refuses to read a registration without its registration access token', async () => {
    const client = (await register(t, base)).json();
    const read = await t.app.inject({ method: 'GET', url: new URL(client.registration_client_uri).pathname, headers: { host: t.host } });
    expectOAuthError(read, 401, 'invalid_token');
  });

  it('issues a client_secret to a client_secret_post client', async () => {
    const response = await register(t, { ...base, token_endpoint_auth_method: 'client_secret_post' });
    expect(response.statusCode).toBe(201);
    expect(response.json()).toMatchObject({ token_endpoint_auth_method: 'client_secret_post', client_secret: expect.any(String) });
  });

  it('accepts a registration without scope', async () => {
    const response = await register(t, base);
    expect(response.statusCode).toBe(201);
    expect(response.json().redirect_uris).toEqual(base.redirect_uris);
  });

  it('accepts scope: "" as no scope', async () => {
    const response = await register(t, { ...base, scope: '' });
    expect(response.statusCode).toBe(201);
    expect(response.json()).not.toHaveProperty('scope');
  });

  it('drops scopes it does not know instead of failing (Claude.ai sends "claudeai")', async () => {
    const unknownOnly = await register(t, { ...base, scope: 'claudeai' });
    expect(unknownOnly.statusCode).toBe(201);
    expect(unknownOnly.json()).not.toHaveProperty('scope');

    const mixed = await register(t, { ...base, scope: 'claudeai mcp' });
    expect(mixed.statusCode).toBe(201);
    expect(mixed.json().scope).toBe('mcp');
  });

  it('answers a CORS preflight from a browser client (MCP Inspector)', async () => {
    const response = await t.app.inject({
      method: 'OPTIONS',
      url: '/register',
      headers: {
        host: t.host,
        origin: INSPECTOR,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'content-type',
      },
    });
    expect(response.statusCode).toBe(204);
    expect(response.headers['access-control-allow-origin']).toBe(INSPECTOR);
    expect(String(response.headers['access-control-allow-methods'])).toContain('POST');
    expect(String(response.headers['access-control-allow-headers'])).toContain('content-type');
  });

  it('echoes the Origin on the registration response itself', async () => {
    const response = await register(t, base, { origin: INSPECTOR });
    expect(response.statusCode).toBe(201);
    expect(response.headers['access-control-allow-origin']).toBe(INSPECTOR);
  });
});

describe('POST /register refuses bad requests with an OAuth error and writes nothing (RFC 7591 §3.2.2)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
    // One row, so "nothing written" is measured against a non-empty table.
    expect((await register(t, base)).statusCode).toBe(201);
    expect(countClients(t.config.databasePath)).toBe(1);
  });
  afterAll(async () => t?.app.close());

  /** Sends the request and checks the refusal, and that the Client table did not change. */
  async function expectRefused(
    send: () => Promise<LightMyRequestResponse>,
    status: number,
    error: string,
  ): Promise<LightMyRequestResponse> {
    const before = countClients(t.config.databasePath);
    const response = await send();
    expectOAuthError(response, status, error);
    expect(countClients(t.config.databasePath)).toBe(before);
    return response;
  }

  it.each([
    ['a javascript: URI', 'javascript:alert(1)'],
    ['a data: URI', 'data:text/html,<script>alert(1)</script>'],
    ['a file: URI', 'file:///etc/passwd'],
    ['a redirect URI with a fragment (RFC 6749 §3.1.2)', 'https://app.example.com/callback#frag'],
    ['a redirect URI with userinfo', 'https://user:pass@app.example.com/callback'],
    ['a wildcard host', 'https://*.example.com/callback'],
    ['a wildcard path', 'https://app.example.com/*'],
    ['plain http to a non-loopback host (RFC 8252 §8.3)', 'http://app.example.com/callback'],
    ['https to a loopback host (RFC 8252 §7.3)', 'https://localhost:8443/callback'],
    ['a relative URI', '/callback'],
  ])('refuses %s with invalid_redirect_uri', async (_label, uri) => {
    await expectRefused(() => register(t, { ...base, redirect_uris: [uri] }), 400, 'invalid_redirect_uri');
  });

  it('refuses the whole registration when one of several redirect URIs is bad', async () => {
    await expectRefused(
      () => register(t, { ...base, redirect_uris: ['https://app.example.com/callback', 'javascript:alert(1)'] }),
      400,
      'invalid_redirect_uri',
    );
  });

  it('refuses 11 redirect URIs with invalid_redirect_uri', async () => {
    const uris = Array.from({ length: 11 }, (_, i) => `https://app.example.com/callback/${i}`);
    await expectRefused(() => register(t, { ...base, redirect_uris: uris }), 400, 'invalid_redirect_uri');
  });

  it('refuses a registration without redirect_uris with invalid_redirect_uri', async () => {
    await expectRefused(() => register(t, { client_name: 'No Redirects' }), 400, 'invalid_redirect_uri');
    await expectRefused(() => register(t, { ...base, redirect_uris: [] }), 400, 'invalid_redirect_uri');
  });

  it('refuses metadata of the wrong type with invalid_client_metadata', async () => {
    await expectRefused(() => register(t, { ...base, client_name: 42 }), 400, 'invalid_client_metadata');
    await expectRefused(() => register(t, { ...base, redirect_uris: 'https://app.example.com/callback' }), 400, 'invalid_client_metadata');
  });

  it('refuses grant types and auth methods outside the policy with invalid_client_metadata', async () => {
    await expectRefused(() => register(t, { ...base, grant_types: ['client_credentials'] }), 400, 'invalid_client_metadata');
    await expectRefused(() => register(t, { ...base, token_endpoint_auth_method: 'private_key_jwt' }), 400, 'invalid_client_metadata');
  });

  it('refuses a body that is JSON but not an object', async () => {
    await expectRefused(() => register(t, '[{"redirect_uris":["https://app.example.com/callback"]}]'), 400, 'invalid_client_metadata');
    await expectRefused(() => register(t, 'null'), 400, 'invalid_client_metadata');
  });

  it('answers malformed JSON with 400 and an OAuth error body', async () => {
    await expectRefused(() => register(t, '{"redirect_uris": ['), 400, 'invalid_client_metadata');
    await expectRefused(() => register(t, ''), 400, 'invalid_client_metadata');
  });

  it('answers a body over 16 KiB with 413 and an OAuth error body', async () => {
    const body = JSON.stringify({ ...base, client_uri: `https://app.example.com/${'a'.repeat(17 * 1024)}` });
    await expectRefused(() => register(t, body), 413, 'invalid_request');
  });

  it('answers a body over the app-wide limit with 413 and an OAuth error body', async () => {
    await expectRefused(() => register(t, JSON.stringify({ ...base, padding: 'a'.repeat(100 * 1024) })), 413, 'invalid_request');
  });

  it.each([
    ['text/plain', JSON.stringify(base)],
    ['application/x-www-form-urlencoded', 'client_name=Form&redirect_uris=https%3A%2F%2Fapp.example.com%2Fcallback'],
    ['application/vnd.example+json', JSON.stringify(base)],
  ])('refuses a %s body with an OAuth error', async (contentType, payload) => {
    await expectRefused(() => register(t, payload, { 'content-type': contentType }), 400, 'invalid_client_metadata');
  });

  it('refuses a request with no body with an OAuth error', async () => {
    await expectRefused(
      () => t.app.inject({ method: 'POST', url: '/register', headers: { host: t.host } }),
      400,
      'invalid_client_metadata',
    );
  });
});

describe('PUT /register/:clientId applies the registration policy to updates (RFC 7592 §2.2)', () => {
  let t: TestApp;
  let client: { client_id: string; registration_client_uri: string; registration_access_token: string };
  beforeAll(async () => {
    t = await startApp();
    client = (await register(t, base)).json();
  });
  afterAll(async () => t?.app.close());

  const update = (body: unknown) =>
    t.app.inject({
      method: 'PUT',
      url: new URL(client.registration_client_uri).pathname,
      headers: { host: t.host, authorization: `Bearer ${client.registration_access_token}`, 'content-type': 'application/json' },
      payload: JSON.stringify(body),
    });
  const read = async () =>
    (
      await t.app.inject({
        method: 'GET',
        url: new URL(client.registration_client_uri).pathname,
        headers: { host: t.host, authorization: `Bearer ${client.registration_access_token}` },
      })
    ).json();

  it.each([
    ['plain http to a non-loopback host', 'http://evil.example/callback'],
    ['userinfo', 'https://user:pass@evil.example/callback'],
    ['a wildcard host', 'https://*.evil.example/callback'],
    ['a scheme that is not reverse-DNS private-use', 'evil:/callback'],
  ])('refuses an update to a redirect URI with %s and keeps the registered ones', async (_label, uri) => {
    const response = await update({ ...base, client_id: client.client_id, redirect_uris: [uri] });
    expectOAuthError(response, 400, 'invalid_redirect_uri');
    expect((await read()).redirect_uris).toEqual(base.redirect_uris);
  });

  it('accepts a valid update, dropping unknown scopes as registration does', async () => {
    const response = await update({ ...base, client_id: client.client_id, client_name: 'Renamed', scope: 'claudeai' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({ client_id: client.client_id, client_name: 'Renamed', redirect_uris: base.redirect_uris });
    expect((await read()).client_name).toBe('Renamed');
  });

  it('refuses an update that does not repeat the client_id', async () => {
    expectOAuthError(await update(base), 400, 'invalid_request');
  });
});

describe('POST /register rate limit', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startApp();
  });
  afterAll(async () => t?.app.close());

  it('answers the 61st registration in a minute from one IP with 429, retry-after and an OAuth-style error body', async () => {
    const statuses: number[] = [];
    let limited: LightMyRequestResponse | undefined;
    for (let i = 0; i < 70 && !limited; i++) {
      // Refused bodies count too: the limit is on requests, before any parsing.
      const response = await register(t, { client_name: 'Flood' });
      statuses.push(response.statusCode);
      if (response.statusCode === 429) limited = response;
    }
    expect(statuses.slice(0, 60).every((status) => status === 400)).toBe(true);
    expect(statuses).toHaveLength(61);
    if (!limited) throw new Error('never rate limited');
    expectOAuthError(limited, 429, 'rate_limited');
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
  });
});
