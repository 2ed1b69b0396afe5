import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.ts';
import type { Config } from '../../src/config.ts';
import { buildTestApp } from '../support/gatehouse.ts';

const INSPECTOR = 'http://localhost:6274';
const initialize = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'gate-test', version: '1.0.0' } },
};

let app: FastifyInstance;
let config: Config;
let host: string;

beforeAll(async () => {
  ({ app, config } = await buildTestApp());
  host = new URL(config.publicUrl).host;
});
afterAll(async () => app?.close());

const post = (headers: Record<string, string> = {}, url = '/mcp') =>
  app.inject({
    method: 'POST',
    url,
    headers: { host, 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    payload: JSON.stringify(initialize),
  });

/** An RFC 6750 §3 challenge naming the protected-resource metadata (RFC 9728 §5.1) and the scope. */
function expectChallenge(response: LightMyRequestResponse, error?: string): string {
  expect(response.statusCode).toBe(401);
  const challenge = String(response.headers['www-authenticate']);
  expect(challenge).toMatch(/^Bearer /);
  expect(challenge).toContain(`resource_metadata="${config.publicUrl}/.well-known/oauth-protected-resource/mcp"`);
  expect(challenge).toContain('scope="mcp"');
  if (error) {
    expect(challenge).toContain(`error="${error}"`);
    expect(response.json().error).toBe(error);
  } else {
    expect(challenge).not.toContain('error=');
  }
  return challenge;
}

describe('/mcp without a usable access token (RFC 6750, RFC 9728)', () => {
  it('answers a request without a token with 401 and a challenge naming the metadata and scope, no error code', async () => {
    const response = await post();
    const challenge = expectChallenge(response);
    expect(challenge).toBe(`Bearer resource_metadata="${config.publicUrl}/.well-known/oauth-protected-resource/mcp", scope="mcp"`);
    // The gate answers this one itself: the same body and headers the error handler gives every other refusal.
    expect(response.json()).toEqual({ error: 'invalid_request', error_description: 'an access token is required' });
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers['content-type']).toBe('application/json; charset=utf-8');
  });

  it.each([
    ['a garbage token', 'Bearer not-a-token!'],
    ['an unknown token of the right shape', `Bearer ${'A'.repeat(43)}`],
    ['an alg:none JWT', 'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.'],
    ['a 10 KB token', `Bearer ${'a'.repeat(10 * 1024)}`],
    ['Basic credentials', `Basic ${Buffer.from('user:pass').toString('base64')}`],
    ['a Bearer scheme with no token', 'Bearer '],
    ['two tokens', `Bearer ${'A'.repeat(43)} ${'B'.repeat(43)}`],
  ])('answers %s with 401 invalid_token', async (_label, authorization) => {
    expectChallenge(await post({ authorization }), 'invalid_token');
  });

  it('refuses an access token in the query string with 400 (RFC 9700 §2.5)', async () => {
    const response = await post({}, `/mcp?access_token=${'A'.repeat(43)}`);
    expect(response.statusCode).toBe(400);
    expect(response.json().error).toBe('invalid_request');
  });

  it('answers GET and DELETE without a token with 401 too', async () => {
    for (const method of ['GET', 'DELETE'] as const) {
      const response = await app.inject({ method, url: '/mcp', headers: { host, accept: 'text/event-stream' } });
      expectChallenge(response);
    }
  });

  it('answers a malformed JSON body with a 4xx, not a 5xx', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/mcp',
      headers: { host, 'content-type': 'application/json', authorization: `Bearer ${'A'.repeat(43)}` },
      payload: '{"jsonrpc":',
    });
    expect(response.statusCode).toBeGreaterThanOrEqual(400);
    expect(response.statusCode).toBeLessThan(500);
    expect(response.json().error).toEqual(expect.any(String));
  });
});

describe('/mcp Origin check (MCP Streamable HTTP: DNS rebinding)', () => {
  it('refuses a foreign Origin with 403', async () => {
    const response = await post({ origin: 'https://evil.example' });
    expect(response.statusCode).toBe(403);
    expect(response.json().error).toBe('invalid_request');
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('refuses a foreign Origin even with a plausible token', async () => {
    const response = await post({ origin: 'https://evil.example', authorization: `Bearer ${'A'.repeat(43)}` });
    expect(response.statusCode).toBe(403);
  });

  it('lets a loopback Origin (MCP Inspector) through to the bearer check', async () => {
    const response = await post({ origin: INSPECTOR });
    expectChallenge(response);
    expect(response.headers['access-control-allow-origin']).toBe(INSPECTOR);
  });

  it('lets its own Origin through to the bearer check', async () => {
    expectChallenge(await post({ origin: config.publicUrl }));
  });

  it('answers the CORS preflight of a browser client: allows mcp-protocol-version, exposes WWW-Authenticate and Mcp-Session-Id', async () => {
    const response = await app.inject({
      method: 'OPTIONS',
      url: '/mcp',
      headers: {
        host,
        origin: INSPECTOR,
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, content-type, mcp-protocol-version',
      },
    });
    expect(response.statusCode).toBe(204);
    expect(response.headers['access-control-allow-origin']).toBe(INSPECTOR);
    const allowed = String(response.headers['access-control-allow-headers']).toLowerCase().split(/,\s*/);
    expect(allowed).toEqual(expect.arrayContaining(['authorization', 'content-type', 'mcp-protocol-version', 'mcp-session-id']));
    const exposed = String(response.headers['access-control-expose-headers']).toLowerCase().split(/,\s*/);
    expect(exposed).toEqual(expect.arrayContaining(['www-authenticate', 'mcp-session-id', 'retry-after']));
  });

  it('names every scope of the deployment in the 401 challenge and the metadata, so one consent covers every tool family', async () => {
    const federated = await buildTestApp({
      GOOGLE_CLIENT_ID: 'g',
      GOOGLE_CLIENT_SECRET: 's',
      GOOGLE_ISSUER: 'http://127.0.0.1:9/google',
      OWNERREZ_CLIENT_ID: 'c_1',
      OWNERREZ_CLIENT_SECRET: 's_1',
      OWNERREZ_API_URL: 'http://127.0.0.1:9/ownerrez',
    });
    try {
      const response = await federated.app.inject({
        method: 'POST',
        url: '/mcp',
        headers: { 'content-type': 'application/json' },
        payload: '{}',
      });
      expect(response.statusCode).toBe(401);
      expect(response.headers['www-authenticate']).toContain('scope="mcp google.calendar ownerrez"');
      const metadata = await federated.app.inject({ method: 'GET', url: '/.well-known/oauth-protected-resource/mcp' });
      expect(metadata.json().scopes_supported).toEqual(['mcp', 'google.calendar', 'ownerrez']);
    } finally {
      await federated.app.close();
    }
  });

  it('exposes WWW-Authenticate on the 401 itself so a browser client can read the challenge', async () => {
    const response = await post({ origin: INSPECTOR });
    expect(String(response.headers['access-control-expose-headers']).toLowerCase()).toContain('www-authenticate');
  });

  it('does not allow a foreign Origin in the preflight', async () => {
    const response = await app.inject({
      method: 'OPTIONS',
      url: '/mcp',
      headers: { host, origin: 'https://evil.example', 'access-control-request-method': 'POST' },
    });
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('dangerouslySkipBearerGate (the benchmark’s “same server without the gate”)', () => {
  const benchUser = { token: 'bench', clientId: 'bench-client', scopes: ['mcp'], extra: { accountId: 'nobody', grantId: 'none' } };

  it('is refused in production, before anything is opened', async () => {
    const production = { ...config, production: true };
    await expect(buildApp(production, { dangerouslySkipBearerGate: benchUser })).rejects.toThrow(
      'dangerouslySkipBearerGate is refused in production',
    );
  });

  it('serves /mcp without a token as the AuthInfo given, and only /mcp: the OAuth endpoints still want their credentials', async () => {
    const ungated = await buildTestApp({}, { dangerouslySkipBearerGate: benchUser });
    try {
      const inject = (url: string, payload: string) =>
        ungated.app.inject({
          method: 'POST',
          url,
          headers: { host, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          payload,
        });
      const opened = await inject('/mcp', JSON.stringify(initialize));
      expect(opened.statusCode).toBe(200);
      expect(opened.headers['mcp-session-id']).toBeTruthy();
      const introspection = await ungated.app.inject({
        method: 'POST',
        url: '/introspect',
        headers: { host, 'content-type': 'application/x-www-form-urlencoded' },
        payload: 'token=anything',
      });
      expect(introspection.statusCode).toBe(400);
      expect(introspection.json().error_description).toBe('no client authentication mechanism provided');
    } finally {
      await ungated.app.close();
    }
  });
});
