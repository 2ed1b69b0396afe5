import { randomBytes } from 'node:crypto';
import type { Provider } from 'oidc-provider';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { openDatabase } from '../../src/db/index.ts';
import { OAuthError } from '../../src/errors.ts';
import { type BearerOptions, recallBearer, verifyBearer } from '../../src/mcp/bearer.ts';
import { accessTokenExistence, createAdapterFactory } from '../../src/oauth/adapter.ts';
import { createProvider } from '../../src/oauth/provider.ts';
import { createReplayHooks } from '../../src/oauth/replay-policy.ts';
import { createScopePolicy } from '../../src/oauth/scopes.ts';
import { createVault } from '../../src/upstream/vault.ts';

const config = loadConfig(
  {
    PUBLIC_URL: 'https://gatehouse.example',
    DATABASE_PATH: ':memory:',
    ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    COOKIE_SECRET: 'c'.repeat(32),
  },
  () => {},
);

describe('verifyBearer', () => {
  let provider: Provider;
  let options: BearerOptions;
  let storage: ReturnType<typeof openDatabase>;

  /** Mints an opaque access token the way the token endpoint does, for a chosen audience and scope. */
  const mint = async (audience: string, scope = 'mcp'): Promise<string> => {
    const token = new provider.AccessToken({
      accountId: 'account-1',
      clientId: 'client-1',
      grantId: 'grant-1',
      scope,
      expiresWithSession: false,
    } as never);
    token.resourceServer = new provider.ResourceServer(audience, {
      audience,
      scope: 'mcp',
      accessTokenFormat: 'opaque',
      accessTokenTTL: config.accessTokenTtl,
    });
    return token.save();
  };

  beforeAll(() => {
    storage = openDatabase(':memory:');
    const vault = createVault(config.encryptionKeys);
    provider = createProvider({
      config,
      adapter: createAdapterFactory(storage.sqlite, storage.commits, vault, createReplayHooks(storage.sqlite)),
      jwks: { keys: [] },
      findAccount: async () => undefined,
      scopes: createScopePolicy([]),
      renderErrorPage: () => '',
    });
    options = {
      provider,
      resourceUrl: config.resourceUrl,
      resourceMetadataUrl: `${config.publicUrl}/.well-known/oauth-protected-resource/mcp`,
      requiredScopes: ['mcp'],
    };
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  const rejection = async (header: string | undefined) => {
    const error = await verifyBearer(header, options).then(
      () => undefined,
      (thrown: unknown) => thrown,
    );
    expect(error).toBeInstanceOf(OAuthError);
    return error as OAuthError;
  };

  it('accepts a live token issued for this resource and returns the SDK AuthInfo', async () => {
    const auth = await verifyBearer(`Bearer ${await mint(config.resourceUrl)}`, options);
    expect(auth).toMatchObject({ clientId: 'client-1', scopes: ['mcp'], extra: { accountId: 'account-1' } });
    expect(auth.resource?.href).toBe(config.resourceUrl);
  });

  it('rejects a token issued for another resource (RFC 8707)', async () => {
    const error = await rejection(`Bearer ${await mint('https://other.example/mcp')}`);
    expect(error.status).toBe(401);
    expect(error.headers['www-authenticate']).toContain('error="invalid_token"');
  });

  it('rejects an expired token', async () => {
    const token = await mint(config.resourceUrl);
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(Date.now() + (config.accessTokenTtl + 1) * 1000);
    expect((await rejection(`Bearer ${token}`)).status).toBe(401);
  });

  it('rejects a tampered token (one character changed)', async () => {
    const token = await mint(config.resourceUrl);
    const tampered = `${token.slice(0, -1)}${token.endsWith('A') ? 'B' : 'A'}`;
    expect((await rejection(`Bearer ${tampered}`)).status).toBe(401);
  });

  it('rejects an alg:none JWT, a Basic header and an oversized token before any lookup', async () => {
    for (const header of [
      'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.',
      'Basic dXNlcjpwYXNz',
      `Bearer ${'a'.repeat(10_000)}`,
      'Bearer',
      'Bearer a b',
    ]) {
      const error = await rejection(header);
      expect(error.status, header.slice(0, 20)).toBe(401);
      expect(error.code).toBe('invalid_token');
    }
  });

  it('answers a request without a token with a challenge carrying no error code (RFC 6750 §3.1)', async () => {
    const error = await rejection(undefined);
    expect(error.status).toBe(401);
    expect(error.headers['www-authenticate']).toBe(`Bearer resource_metadata="${options.resourceMetadataUrl}", scope="mcp"`);
  });

  it('takes revocation into account on the very next request, even for a token it has verified before', async () => {
    const gate = { ...options, tokenExists: accessTokenExistence(storage.sqlite) };
    const token = await mint(config.resourceUrl);
    await storage.commits.durable();
    expect((await verifyBearer(`Bearer ${token}`, gate)).extra).toMatchObject({ accountId: 'account-1' });
    expect((await verifyBearer(`Bearer ${token}`, gate)).extra).toMatchObject({ accountId: 'account-1' });
    await provider.AccessToken.adapter.destroy(token);
    const error = await verifyBearer(`Bearer ${token}`, gate).then(
      () => undefined,
      (thrown: unknown) => thrown as OAuthError,
    );
    expect(error?.status).toBe(401);
  });

  it('recalls a header only once verifyBearer accepted it, and never one it refused', async () => {
    const gate = { ...options, tokenExists: accessTokenExistence(storage.sqlite) };
    const token = await mint(config.resourceUrl);
    await storage.commits.durable();
    expect(recallBearer(`Bearer ${token}`, gate)).toBeUndefined();
    const verified = await verifyBearer(`Bearer ${token}`, gate);
    expect(recallBearer(`Bearer ${token}`, gate)).toBe(verified);
    expect(recallBearer(`bearer  ${token}`, gate)).toBeUndefined(); // another spelling is verified on its own
    const foreign = `Bearer ${await mint('https://other.example/mcp')}`;
    await verifyBearer(foreign, gate).catch(() => undefined);
    expect(recallBearer(foreign, gate)).toBeUndefined();
    await provider.AccessToken.adapter.destroy(token);
    expect(() => recallBearer(`Bearer ${token}`, gate)).toThrow('expired, revoked or unknown');
    expect(recallBearer(`Bearer ${token}`, gate)).toBeUndefined(); // forgotten: the next try goes to the provider, which refuses it
  });

  it('refuses a token it verified before once its exp has passed, though its row is not purged yet', async () => {
    const gate = { ...options, tokenExists: accessTokenExistence(storage.sqlite) };
    const token = await mint(config.resourceUrl);
    await storage.commits.durable();
    expect((await verifyBearer(`Bearer ${token}`, gate)).extra).toMatchObject({ accountId: 'account-1' });
    vi.useFakeTimers({ now: Date.now() + (config.accessTokenTtl + 1) * 1000, toFake: ['Date'] });
    try {
      expect(gate.tokenExists(token)).toBe(true); // the row is still there: only the gate's exp check refuses it
      const error = await verifyBearer(`Bearer ${token}`, gate).then(
        () => undefined,
        (thrown: unknown) => thrown as OAuthError,
      );
      expect(error?.status).toBe(401);
    } finally {
      vi.useRealTimers();
    }
  });

  it('answers 403 insufficient_scope for a token without the required scope', async () => {
    const error = await rejection(`Bearer ${await mint(config.resourceUrl, '')}`);
    expect(error.status).toBe(403);
    expect(error.headers['www-authenticate']).toContain('error="insufficient_scope"');
  });
});
