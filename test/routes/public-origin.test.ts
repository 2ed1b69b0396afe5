import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from '../support/gatehouse.ts';

describe('endpoint URLs come from PUBLIC_URL, never from the request', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    ({ app } = await buildTestApp({ PUBLIC_URL: 'https://gatehouse.example.com' }));
  });
  afterAll(async () => app?.close());

  it('ignores a spoofed Host and X-Forwarded-* headers in the discovery document', async () => {
    const response = await app.inject({
      method: 'GET',
      url: '/.well-known/oauth-authorization-server',
      headers: { host: 'evil.example', 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'http' },
    });
    expect(response.statusCode).toBe(200);
    const metadata = response.json() as Record<string, string>;
    expect(metadata.issuer).toBe('https://gatehouse.example.com');
    for (const name of [
      'authorization_endpoint',
      'token_endpoint',
      'registration_endpoint',
      'revocation_endpoint',
      'introspection_endpoint',
      'jwks_uri',
    ]) {
      expect(metadata[name], name).toMatch(/^https:\/\/gatehouse\.example\.com\//);
    }
    expect(response.body).not.toContain('evil.example');
  });

  it('returns a registration_client_uri on the public origin', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/register',
      headers: { host: 'evil.example', 'content-type': 'application/json' },
      payload: { client_name: 'Origin test', redirect_uris: ['https://app.example.com/cb'] },
    });
    expect(response.statusCode).toBe(201);
    expect(response.json().registration_client_uri).toMatch(/^https:\/\/gatehouse\.example\.com\/register\//);
  });
});
