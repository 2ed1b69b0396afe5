import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.ts';
import { ConfigError, loadConfig } from '../../src/config.ts';

const key = () => randomBytes(32).toString('base64');
const dirs: string[] = [];
function tempDatabase(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-config-'));
  dirs.push(dir);
  return join(dir, 'gatehouse.db');
}
const production = (extra: Record<string, string> = {}) => ({
  NODE_ENV: 'production',
  PUBLIC_URL: 'https://gatehouse.example.com',
  ENCRYPTION_KEY: key(),
  COOKIE_SECRET: 'x'.repeat(32),
  ENTRA_CLIENT_ID: 'entra-client',
  ENTRA_CLIENT_SECRET: 'entra-secret',
  ENTRA_TENANT_ID: '00000000-0000-0000-0000-00000000000a',
  DATABASE_PATH: tempDatabase(),
  ...extra,
});
const failure = (env: Record<string, string | undefined>): string => {
  try {
    loadConfig(env, () => {});
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return (error as Error).message;
  }
  throw new Error('expected loadConfig to fail');
};

afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('loadConfig', () => {
  it('starts with the demo login and generated development secrets when nothing is configured', () => {
    const warnings: string[] = [];
    const config = loadConfig({ DATABASE_PATH: tempDatabase() }, (message) => warnings.push(message));
    expect(config).toMatchObject({
      demoLogin: true,
      production: false,
      publicUrl: 'http://localhost:3000',
      resourceUrl: 'http://localhost:3000/mcp',
      accessTokenTtl: 900,
    });
    const secrets = join(config.databasePath, '..', 'dev-secrets.json');
    expect(existsSync(secrets)).toBe(true);
    expect(statSync(secrets).mode & 0o777).toBe(0o600);
    expect(warnings.join('\n')).toMatch(/ENCRYPTION_KEY.*COOKIE_SECRET/);
    // A restart reads the same secrets back, so sealed rows and cookies stay valid.
    const again = loadConfig({ DATABASE_PATH: config.databasePath }, () => {});
    expect(again.encryptionKeys[0]?.key.equals(config.encryptionKeys[0]?.key as Buffer)).toBe(true);
  });

  it('requires ENCRYPTION_KEY and COOKIE_SECRET in production, naming the variable', () => {
    expect(failure(production({ ENCRYPTION_KEY: '' }))).toMatch(/^ENCRYPTION_KEY:/);
    expect(failure(production({ COOKIE_SECRET: '' }))).toMatch(/^COOKIE_SECRET:/);
  });

  it('refuses the demo login, plain-http PUBLIC_URL and no identity provider in production', () => {
    expect(failure(production({ DEMO_LOGIN: 'true' }))).toMatch(/^DEMO_LOGIN:.*production/);
    expect(failure(production({ PUBLIC_URL: 'http://gatehouse.example.com' }))).toMatch(/^PUBLIC_URL:/);
    expect(failure(production({ ENTRA_CLIENT_ID: '' }))).toMatch(/^DEMO_LOGIN:.*no identity provider/);
  });

  it('accepts http:// upstream URLs only for loopback hosts', () => {
    expect(
      failure({
        GOOGLE_CLIENT_ID: 'g',
        GOOGLE_CLIENT_SECRET: 's',
        GOOGLE_ISSUER: 'http://accounts.example.com',
        DATABASE_PATH: tempDatabase(),
      }),
    ).toMatch(/^GOOGLE_ISSUER:/);
    const config = loadConfig(
      { GOOGLE_CLIENT_ID: 'g', GOOGLE_CLIENT_SECRET: 's', GOOGLE_ISSUER: 'http://127.0.0.1:4000', DATABASE_PATH: tempDatabase() },
      () => {},
    );
    expect(config.upstreams.google?.issuer).toBe('http://127.0.0.1:4000');
  });

  it('admits only allow-listed Entra tenants: a specific tenant itself, a multi-tenant issuer only with ENTRA_ALLOWED_TENANTS', () => {
    const entra = (extra: Record<string, string>) => ({
      ENTRA_CLIENT_ID: 'e',
      ENTRA_CLIENT_SECRET: 's',
      DATABASE_PATH: tempDatabase(),
      ...extra,
    });
    expect(failure(entra({}))).toMatch(/^ENTRA_ALLOWED_TENANTS:.*organizations/);
    expect(failure(entra({ ENTRA_TENANT_ID: 'common' }))).toMatch(/^ENTRA_ALLOWED_TENANTS:/);
    const tenant = '00000000-0000-0000-0000-0000000000AB';
    expect(loadConfig(entra({ ENTRA_TENANT_ID: tenant }), () => {}).upstreams.entra).toMatchObject({
      allowedTenants: [tenant.toLowerCase()],
      issuer: `https://login.microsoftonline.com/${tenant}/v2.0`,
      scopes: ['User.Read', 'Calendars.Read'],
    });
    expect(failure(entra({ ENTRA_TENANT_ID: tenant, ENTRA_ALLOWED_TENANTS: 'other' }))).toMatch(/^ENTRA_ALLOWED_TENANTS:.*only itself/);
    const multi = loadConfig(entra({ ENTRA_ALLOWED_TENANTS: 'T1, t2', ENTRA_SCOPES: 'User.Read Calendars.Read' }), () => {});
    expect(multi.upstreams.entra).toMatchObject({ allowedTenants: ['t1', 't2'], scopes: ['User.Read', 'Calendars.Read'] });
  });

  it('parses provider scopes and the OwnerRez redirect_uri switch', () => {
    const base = { DATABASE_PATH: tempDatabase(), OWNERREZ_CLIENT_ID: 'c_1', OWNERREZ_CLIENT_SECRET: 's_1' };
    expect(loadConfig(base, () => {}).upstreams.ownerrez?.sendRedirectUriOnExchange).toBe(true);
    expect(loadConfig({ ...base, OWNERREZ_SEND_REDIRECT_URI: 'false' }, () => {}).upstreams.ownerrez?.sendRedirectUriOnExchange).toBe(
      false,
    );
    expect(failure({ ...base, GOOGLE_CLIENT_ID: 'g' })).toMatch(/^GOOGLE_CLIENT_SECRET: required/);
    expect(failure({ ...base, GOOGLE_CLIENT_ID: 'g', GOOGLE_CLIENT_SECRET: 's', GOOGLE_SCOPES: 'https://x/calendar "quoted"' })).toMatch(
      /^GOOGLE_SCOPES:/,
    );
  });

  it('parses the tool settings: API origins (https or loopback), proxy mode with an enabled provider, rate limits, audit retention', () => {
    const base = { DATABASE_PATH: tempDatabase(), GOOGLE_CLIENT_ID: 'g', GOOGLE_CLIENT_SECRET: 's' };
    expect(loadConfig(base, () => {})).toMatchObject({
      apiUrls: { google: 'https://www.googleapis.com', graph: 'https://graph.microsoft.com' },
      backend: undefined,
      toolRateLimits: { perAccount: 120, perClient: 600 },
      auditRetentionDays: 90,
    });
    expect(loadConfig({ ...base, GOOGLE_API_URL: 'http://127.0.0.1:9999/' }, () => {}).apiUrls.google).toBe('http://127.0.0.1:9999');
    expect(failure({ ...base, GRAPH_API_URL: 'http://graph.example.com' })).toMatch(/^GRAPH_API_URL:/);
    const proxied = { ...base, MCP_BACKEND_URL: 'https://mcp.example.com/mcp', MCP_BACKEND_PROVIDER: 'google' };
    expect(loadConfig(proxied, () => {}).backend).toEqual({ url: 'https://mcp.example.com/mcp', provider: 'google' });
    expect(failure({ ...proxied, MCP_BACKEND_PROVIDER: 'entra' })).toMatch(/^MCP_BACKEND_PROVIDER:.*not enabled/);
    expect(failure({ ...proxied, MCP_BACKEND_PROVIDER: 'github' })).toMatch(/^MCP_BACKEND_PROVIDER:/);
    expect(failure({ ...base, MCP_BACKEND_PROVIDER: 'google' })).toMatch(/^MCP_BACKEND_PROVIDER:.*MCP_BACKEND_URL/);
    expect(failure({ ...proxied, MCP_BACKEND_URL: 'http://mcp.example.com/mcp' })).toMatch(/^MCP_BACKEND_URL:/);
    expect(failure({ ...base, TOOL_CALLS_PER_MINUTE_PER_ACCOUNT: '0' })).toMatch(/^TOOL_CALLS_PER_MINUTE_PER_ACCOUNT:/);
    expect(failure({ ...base, AUDIT_RETENTION_DAYS: 'forever' })).toMatch(/^AUDIT_RETENTION_DAYS:/);
  });

  it('names the variable for malformed values', () => {
    const base = { DATABASE_PATH: tempDatabase() };
    expect(failure({ ...base, PORT: 'eighty' })).toMatch(/^PORT:/);
    expect(failure({ ...base, ACCESS_TOKEN_TTL: '5' })).toMatch(/^ACCESS_TOKEN_TTL:/);
    expect(failure({ ...base, PUBLIC_URL: 'https://example.com/path' })).toMatch(/^PUBLIC_URL:/);
    expect(failure({ ...base, ENCRYPTION_KEY: 'c2hvcnQ=', COOKIE_SECRET: 'x'.repeat(32) })).toMatch(/^ENCRYPTION_KEY:.*32 bytes/);
    expect(failure({ ...base, ENCRYPTION_KEYS: `a:${key()},a:${key()}`, COOKIE_SECRET: 'x'.repeat(32) })).toMatch(
      /^ENCRYPTION_KEYS:.*duplicate/,
    );
    expect(failure({ ...base, COOKIE_SECRET: 'short', ENCRYPTION_KEY: key() })).toMatch(/^COOKIE_SECRET:/);
    expect(failure({ ...base, LOG_LEVEL: 'loud' })).toMatch(/^LOG_LEVEL:/);
    expect(failure({ ...base, TRUST_PROXY: 'maybe' })).toMatch(/^TRUST_PROXY:/);
    expect(failure({ ...base, MCP_ALLOWED_ORIGINS: 'https://app.example.com/path' })).toMatch(/^MCP_ALLOWED_ORIGINS:/);
  });

  it('uses the first ENCRYPTION_KEYS entry as the primary key', () => {
    const config = loadConfig(
      { ENCRYPTION_KEYS: `k1:${key()},k0:${key()}`, COOKIE_SECRET: 'x'.repeat(32), DATABASE_PATH: tempDatabase() },
      () => {},
    );
    expect(config.encryptionKeys.map((entry) => entry.kid)).toEqual(['k1', 'k0']);
  });
});

describe('start-up', () => {
  it('fails naming ENCRYPTION_KEYS when the configured keys cannot open the stored secrets', async () => {
    const databasePath = tempDatabase();
    const env = { DATABASE_PATH: databasePath, COOKIE_SECRET: 'x'.repeat(32), LOG_LEVEL: 'silent' };
    const first = await buildApp(loadConfig({ ...env, ENCRYPTION_KEYS: `k0:${key()}` }, () => {}));
    await first.close();
    await expect(buildApp(loadConfig({ ...env, ENCRYPTION_KEYS: `k9:${key()}` }, () => {}))).rejects.toThrow(/^ENCRYPTION_KEYS:.*kid "k0"/);
    // The right kid with the wrong key material is caught too, before anything is served.
    await expect(buildApp(loadConfig({ ...env, ENCRYPTION_KEYS: `k0:${key()}` }, () => {}))).rejects.toThrow(
      /^ENCRYPTION_KEYS: the configured keys cannot open/,
    );
  });
});
