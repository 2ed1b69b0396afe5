import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Config } from '../../src/config.ts';
import { buildTestApp } from '../support/gatehouse.ts';

const INSPECTOR = 'http://localhost:6274';

let app: FastifyInstance;
let config: Config;
/** Requests arrive with the public host, as they do for a client that reached PUBLIC_URL. */
let host: string;

beforeAll(async () => {
  ({ app, config } = await buildTestApp());
  host = new URL(config.publicUrl).host;
});
afterAll(async () => app?.close());

const get = (url: string, headers: Record<string, string> = {}) => app.inject({ method: 'GET', url, headers: { host, ...headers } });

describe.each(['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration'])(
  'authorization server metadata at %s (RFC 8414)',
  (path) => {
    let metadata: Record<string, unknown>;
    beforeAll(async () => {
      const response = await get(path);
      expect(response.statusCode).toBe(200);
      metadata = response.json();
    });

    it('names PUBLIC_URL as the issuer', () => {
      expect(metadata.issuer).toBe(config.publicUrl);
    });

    it('offers only the authorization code flow with refresh tokens (OAuth 2.1)', () => {
      expect(metadata.response_types_supported).toEqual(['code']);
      expect([...(metadata.grant_types_supported as string[])].sort()).toEqual(['authorization_code', 'refresh_token']);
    });

    it('offers PKCE with S256 only (OAuth 2.1 §4.1.1)', () => {
      expect(metadata.code_challenge_methods_supported).toEqual(['S256']);
    });

    it('lists none, client_secret_basic and client_secret_post as token endpoint auth methods', () => {
      expect([...(metadata.token_endpoint_auth_methods_supported as string[])].sort()).toEqual([
        'client_secret_basic',
        'client_secret_post',
        'none',
      ]);
    });

    it('announces the iss parameter on authorization responses (RFC 9207)', () => {
      expect(metadata.authorization_response_iss_parameter_supported).toBe(true);
    });

    it('supports Client ID Metadata Documents', () => {
      expect(metadata.client_id_metadata_document_supported).toBe(true);
    });

    it('places every endpoint under the issuer at its documented path', () => {
      expect(metadata).toMatchObject({
        authorization_endpoint: `${config.publicUrl}/authorize`,
        token_endpoint: `${config.publicUrl}/token`,
        registration_endpoint: `${config.publicUrl}/register`,
        revocation_endpoint: `${config.publicUrl}/revoke`,
        introspection_endpoint: `${config.publicUrl}/introspect`,
        jwks_uri: `${config.publicUrl}/jwks`,
      });
    });

    it('answers a browser client from any origin (CORS)', async () => {
      const response = await get(path, { origin: INSPECTOR });
      expect(response.headers['access-control-allow-origin']).toBe(INSPECTOR);
    });
  },
);

describe('the two discovery documents', () => {
  it('are the same document', async () => {
    const oauth = (await get('/.well-known/oauth-authorization-server')).json();
    const openid = (await get('/.well-known/openid-configuration')).json();
    expect(openid).toEqual(oauth);
  });
});

describe.each(['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource'])(
  'protected resource metadata at %s (RFC 9728)',
  (path) => {
    let metadata: Record<string, unknown>;
    beforeAll(async () => {
      const response = await get(path);
      expect(response.statusCode).toBe(200);
      metadata = response.json();
    });

    it('names PUBLIC_URL/mcp as the resource', () => {
      expect(metadata.resource).toBe(`${config.publicUrl}/mcp`);
    });

    it('names the authorization server byte-for-byte as its issuer (RFC 9728 §3.3)', async () => {
      const issuer = (await get('/.well-known/oauth-authorization-server')).json().issuer;
      expect(metadata.authorization_servers).toEqual([issuer]);
    });

    it('lists the resource scopes without offline_access', () => {
      expect(metadata.scopes_supported).toEqual(['mcp']);
      expect(metadata.scopes_supported).not.toContain('offline_access');
    });

    it('accepts bearer tokens in the Authorization header only (RFC 6750 §2.1)', () => {
      expect(metadata.bearer_methods_supported).toEqual(['header']);
    });

    it('echoes the Origin of a browser client (CORS)', async () => {
      const response = await get(path, { origin: INSPECTOR });
      expect(response.statusCode).toBe(200);
      expect(response.headers['access-control-allow-origin']).toBe(INSPECTOR);
    });

    it('answers a CORS preflight from a browser client', async () => {
      const response = await app.inject({
        method: 'OPTIONS',
        url: path,
        headers: {
          host,
          origin: INSPECTOR,
          'access-control-request-method': 'GET',
          'access-control-request-headers': 'mcp-protocol-version',
        },
      });
      expect(response.statusCode).toBe(204);
      expect(response.headers['access-control-allow-origin']).toBe(INSPECTOR);
      expect(String(response.headers['access-control-allow-headers'])).toContain('mcp-protocol-version');
    });
  },
);

describe('JWKS', () => {
  it('publishes only public signing keys', async () => {
    const response = await get('/jwks');
    expect(response.statusCode).toBe(200);
    const { keys } = response.json() as { keys: Record<string, unknown>[] };
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      expect(key).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' });
      expect(key).not.toHaveProperty('d');
    }
  });
});

describe('pages that are top-level navigations', () => {
  it('sends no CORS headers on /authorize, even to a browser Origin', async () => {
    const response = await get('/authorize?client_id=unknown&response_type=code', { origin: INSPECTOR });
    expect(response.statusCode).toBe(400);
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('answers no CORS preflight for /authorize', async () => {
    const response = await app.inject({
      method: 'OPTIONS',
      url: '/authorize',
      headers: { host, origin: INSPECTOR, 'access-control-request-method': 'GET' },
    });
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('health check', () => {
  it('answers /healthz with 200', async () => {
    const response = await get('/healthz');
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: 'ok' });
  });
});
