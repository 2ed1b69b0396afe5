import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import { buildTestApp } from '../support/gatehouse.ts';

const REDIRECT_URI = 'https://app.example.com/callback';
const LOOPBACK_REDIRECT_URI = 'http://localhost:56648/callback';
const verifier = randomBytes(32).toString('base64url');
const challenge = createHash('sha256').update(verifier).digest('base64url');

let app: FastifyInstance;
let config: Config;
let host: string;
let clientId: string;

beforeAll(async () => {
  ({ app, config } = await buildTestApp());
  host = new URL(config.publicUrl).host;
  const registered = await app.inject({
    method: 'POST',
    url: '/register',
    headers: { host },
    payload: { client_name: 'Authorize Test', redirect_uris: [REDIRECT_URI, LOOPBACK_REDIRECT_URI], token_endpoint_auth_method: 'none' },
  });
  expect(registered.statusCode).toBe(201);
  clientId = registered.json().client_id;
});
afterAll(async () => app?.close());

type Params = Record<string, string | undefined>;

/** A valid authorization request; a field set to undefined is left out. */
const valid = (): Params => ({
  response_type: 'code',
  client_id: clientId,
  redirect_uri: REDIRECT_URI,
  code_challenge: challenge,
  code_challenge_method: 'S256',
  state: 'state-123',
  scope: 'mcp',
  resource: config.resourceUrl,
});

function authorize(params: Params, extraQuery = ''): Promise<LightMyRequestResponse> {
  const query = new URLSearchParams(Object.entries(params).filter((entry): entry is [string, string] => entry[1] !== undefined));
  return app.inject({ method: 'GET', url: `/authorize?${query}${extraQuery}`, headers: { host } });
}

/** The request went on to Gatehouse's own consent page (the interaction). */
function expectInteraction(response: LightMyRequestResponse): void {
  expect(response.statusCode).toBe(303);
  expect(response.headers.location).toMatch(/^\/interaction\/[A-Za-z0-9_-]+$/);
}

/** Phase 2 of the two-phase rule: the error went back to the client's redirect URI, with iss (RFC 9207). */
function expectRedirectedError(response: LightMyRequestResponse, redirectUri: string): URLSearchParams {
  expect(response.statusCode).toBe(303);
  const location = new URL(String(response.headers.location));
  expect(`${location.origin}${location.pathname}`).toBe(redirectUri);
  expect(location.searchParams.get('iss')).toBe(config.publicUrl);
  expect(location.searchParams.get('state')).toBe('state-123');
  expect(location.searchParams.has('code')).toBe(false);
  return location.searchParams;
}

/** Phase 1 of the two-phase rule: an error page, never a redirect to an untrusted URI. */
function expectErrorPage(response: LightMyRequestResponse, error: string): void {
  expect(response.statusCode).toBe(400);
  expect(response.headers.location).toBeUndefined();
  expect(response.headers['content-type']).toMatch(/^text\/html/);
  expect(response.body).toContain(`(${error})`);
}

describe('GET /authorize with a valid request', () => {
  it('proceeds to the interaction page', async () => {
    expectInteraction(await authorize(valid()));
  });
});

describe('GET /authorize: PKCE is required, S256 only (OAuth 2.1 §4.1.1)', () => {
  it('returns invalid_request to the redirect URI when code_challenge is missing', async () => {
    const error = expectRedirectedError(
      await authorize({ ...valid(), code_challenge: undefined, code_challenge_method: undefined }),
      REDIRECT_URI,
    );
    expect(error.get('error')).toBe('invalid_request');
    expect(error.get('error_description')).toBe('Authorization Server policy requires PKCE to be used for this request');
  });

  it('returns invalid_request to the redirect URI when code_challenge_method is missing', async () => {
    const error = expectRedirectedError(await authorize({ ...valid(), code_challenge_method: undefined }), REDIRECT_URI);
    expect(error.get('error')).toBe('invalid_request');
    expect(error.get('error_description')).toBe('code_challenge_method must be provided');
  });

  it('returns invalid_request to the redirect URI for code_challenge_method=plain', async () => {
    const error = expectRedirectedError(
      await authorize({ ...valid(), code_challenge_method: 'plain', code_challenge: verifier }),
      REDIRECT_URI,
    );
    expect(error.get('error')).toBe('invalid_request');
    expect(error.get('error_description')).toBe('not supported value of code_challenge_method');
  });
});

describe('GET /authorize: an untrusted client or redirect URI gets an error page, not a redirect (two-phase rule)', () => {
  it.each([
    ['another path', 'https://app.example.com/other'],
    ['another port', 'https://app.example.com:8443/callback'],
    ['a trailing slash', 'https://app.example.com/callback/'],
    ['another host', 'https://evil.example.com/callback'],
    ['http instead of https', 'http://app.example.com/callback'],
    ['a query added', 'https://app.example.com/callback?x=1'],
  ])('shows an error page for a redirect URI that differs by %s (RFC 6749 §3.1.2.3)', async (_label, redirectUri) => {
    expectErrorPage(await authorize({ ...valid(), redirect_uri: redirectUri }), 'invalid_redirect_uri');
  });

  it('shows an error page for an unknown client_id', async () => {
    expectErrorPage(await authorize({ ...valid(), client_id: 'no-such-client' }), 'invalid_client');
  });

  it('shows an error page for a duplicated client_id (RFC 6749 §3.1)', async () => {
    expectErrorPage(await authorize({ ...valid(), client_id: 'a' }, '&client_id=a'), 'invalid_request');
    expectErrorPage(await authorize(valid(), `&client_id=${clientId}`), 'invalid_request');
  });
});

describe('GET /authorize: parameters after the client is trusted', () => {
  it('returns invalid_request to the redirect URI for a duplicated parameter (RFC 6749 §3.1)', async () => {
    const error = expectRedirectedError(await authorize(valid(), '&scope=mcp'), REDIRECT_URI);
    expect(error.get('error')).toBe('invalid_request');
    expect(error.get('error_description')).toBe("'scope' parameter must not be provided twice");
  });

  it('returns invalid_target for a resource that is not this server (RFC 8707 §2)', async () => {
    for (const resource of ['https://evil.example/mcp', `${config.resourceUrl}/other`, `${config.resourceUrl}?tenant=1`]) {
      const error = expectRedirectedError(await authorize({ ...valid(), resource }), REDIRECT_URI);
      expect(error.get('error')).toBe('invalid_target');
    }
  });

  it('accepts its resource with a trailing slash', async () => {
    expectInteraction(await authorize({ ...valid(), resource: `${config.resourceUrl}/` }));
  });

  it('accepts its resource with an upper-case scheme and host', async () => {
    const shouted = config.resourceUrl.replace('http://localhost', 'HTTP://LOCALHOST');
    expect(shouted).not.toBe(config.resourceUrl);
    expectInteraction(await authorize({ ...valid(), resource: shouted }));
  });

  it('proceeds without scope (ChatGPT reconnects without one)', async () => {
    expectInteraction(await authorize({ ...valid(), scope: undefined }));
  });

  it('proceeds without resource', async () => {
    expectInteraction(await authorize({ ...valid(), resource: undefined }));
  });

  it('proceeds without scope and without resource', async () => {
    expectInteraction(await authorize({ ...valid(), scope: undefined, resource: undefined }));
  });
});

describe('GET /authorize: loopback redirect URIs (RFC 8252 §7.3)', () => {
  it('accepts the registered loopback redirect URI on another port', async () => {
    expectInteraction(await authorize({ ...valid(), redirect_uri: 'http://localhost:41234/callback' }));
  });

  it('accepts the registered loopback redirect URI without a port', async () => {
    expectInteraction(await authorize({ ...valid(), redirect_uri: 'http://localhost/callback' }));
  });

  it('still requires the same path on a loopback redirect URI', async () => {
    expectErrorPage(await authorize({ ...valid(), redirect_uri: 'http://localhost:41234/other' }), 'invalid_redirect_uri');
  });

  it('still requires the same loopback host (localhost is not 127.0.0.1)', async () => {
    expectErrorPage(await authorize({ ...valid(), redirect_uri: 'http://127.0.0.1:56648/callback' }), 'invalid_redirect_uri');
  });
});
