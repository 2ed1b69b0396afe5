import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

/** A key-encryption key of the vault, named by its kid (the first one is primary). */
export interface KeyEntry {
  readonly kid: string;
  readonly key: Buffer;
}

export interface OidcUpstreamConfig {
  readonly clientId: string;
  readonly clientSecret: string;
  readonly issuer: string;
  /** API scopes asked for beside the OIDC ones (`openid profile email`, plus `offline_access` for Entra). */
  readonly scopes: readonly string[];
}

export interface Config {
  readonly production: boolean;
  readonly port: number;
  readonly host: string;
  /** External origin, no trailing slash. The issuer is exactly this string. */
  readonly publicUrl: string;
  /** The one protected resource: `${publicUrl}/mcp`. */
  readonly resourceUrl: string;
  readonly databasePath: string;
  readonly encryptionKeys: readonly KeyEntry[];
  readonly cookieSecrets: readonly string[];
  readonly accessTokenTtl: number;
  readonly trustProxy: boolean;
  readonly logLevel: string;
  readonly demoLogin: boolean;
  readonly upstreams: {
    readonly entra?: OidcUpstreamConfig & { readonly tenantId: string; readonly allowedTenants: readonly string[] };
    readonly google?: OidcUpstreamConfig & { readonly allowedDomains: readonly string[] };
    readonly ownerrez?: {
      readonly clientId: string;
      readonly clientSecret: string;
      readonly authorizeUrl: string;
      readonly apiUrl: string;
      /** Whether the code exchange repeats `redirect_uri` (RFC 6749 §4.1.3 says yes; reports on OwnerRez disagree). */
      readonly sendRedirectUriOnExchange: boolean;
    };
  };
  /** Browser origins allowed to call /mcp besides our own and loopback ones (MCP Inspector). */
  readonly mcpAllowedOrigins: readonly string[];
  /** Upstream API origins the tools call (tests point them at fakes); tools append `/calendar/v3/…`, `/v1.0/…`, `/v2/…`. */
  readonly apiUrls: { readonly google: string; readonly graph: string };
  /** Proxy mode: /mcp is forwarded to this backend MCP server with the caller's upstream token of `provider`. */
  readonly backend: { readonly url: string; readonly provider: 'entra' | 'google' | 'ownerrez' } | undefined;
  /** Tool calls allowed per minute, per Gatehouse account and per MCP client (persisted across restarts). */
  readonly toolRateLimits: { readonly perAccount: number; readonly perClient: number };
  /** How long tool-call audit rows are kept before the periodic purge deletes them. */
  readonly auditRetentionDays: number;
}

/** Thrown when the environment cannot produce a valid configuration; the message names the variable. */
export class ConfigError extends Error {
  constructor(variable: string, problem: string) {
    super(`${variable}: ${problem}`);
    this.name = 'ConfigError';
  }
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * Parses the environment once into a frozen, typed configuration. The only reader of `process.env`
 * is `server.ts`, which passes it here; a `.env` file is merged in by the caller.
 * `warn` receives the loud development-only notices (generated secrets, demo login).
 */
export function loadConfig(env: Env, warn: (message: string) => void = console.warn): Config {
  const production = env.NODE_ENV === 'production';
  const port = parseInteger(env, 'PORT', 3000, 0, 65535);
  const publicUrl = parseOrigin(env, 'PUBLIC_URL', `http://localhost:${port}`);
  const databasePath = resolve(env.DATABASE_PATH || './data/gatehouse.db');
  const upstreams = parseUpstreams(env);
  const anyUpstream = Boolean(upstreams.entra || upstreams.google || upstreams.ownerrez);

  const demoLogin = parseBoolean(env, 'DEMO_LOGIN', !anyUpstream && !production);
  if (demoLogin && production) throw new ConfigError('DEMO_LOGIN', 'the demo login is refused when NODE_ENV=production');
  if (!demoLogin && !anyUpstream) {
    throw new ConfigError('DEMO_LOGIN', 'no identity provider is enabled: set ENTRA_CLIENT_ID, GOOGLE_CLIENT_ID or OWNERREZ_CLIENT_ID');
  }
  const trustProxy = parseBoolean(env, 'TRUST_PROXY', false);
  if (production && !publicUrl.startsWith('https://')) {
    throw new ConfigError('PUBLIC_URL', 'must be https:// when NODE_ENV=production');
  }

  const secrets = resolveSecrets(env, production, dirname(databasePath), warn);
  const backend = parseBackend(env, upstreams);
  if (demoLogin) warn('DEMO_LOGIN is on: anyone can sign in as any email. Configure a real identity provider before exposing Gatehouse.');

  return Object.freeze({
    production,
    port,
    host: env.HOST || '127.0.0.1',
    publicUrl,
    resourceUrl: `${publicUrl}/mcp`,
    databasePath,
    encryptionKeys: secrets.encryptionKeys,
    cookieSecrets: secrets.cookieSecrets,
    accessTokenTtl: parseInteger(env, 'ACCESS_TOKEN_TTL', 900, 60, 86400),
    trustProxy,
    logLevel: parseLogLevel(env),
    demoLogin,
    upstreams,
    mcpAllowedOrigins: parseList(env.MCP_ALLOWED_ORIGINS).map((origin) =>
      parseOrigin({ MCP_ALLOWED_ORIGINS: origin }, 'MCP_ALLOWED_ORIGINS', origin),
    ),
    apiUrls: {
      google: parseUpstreamUrl(env, 'GOOGLE_API_URL', 'https://www.googleapis.com'),
      graph: parseUpstreamUrl(env, 'GRAPH_API_URL', 'https://graph.microsoft.com'),
    },
    backend,
    toolRateLimits: {
      perAccount: parseInteger(env, 'TOOL_CALLS_PER_MINUTE_PER_ACCOUNT', 120, 1, 1_000_000),
      perClient: parseInteger(env, 'TOOL_CALLS_PER_MINUTE_PER_CLIENT', 600, 1, 1_000_000),
    },
    auditRetentionDays: parseInteger(env, 'AUDIT_RETENTION_DAYS', 90, 1, 3650),
  });
}

function parseUpstreams(env: Env): Config['upstreams'] {
  const upstreams: { -readonly [K in keyof Config['upstreams']]: Config['upstreams'][K] } = {};
  if (env.ENTRA_CLIENT_ID) {
    const tenantId = env.ENTRA_TENANT_ID || 'organizations';
    upstreams.entra = {
      clientId: env.ENTRA_CLIENT_ID,
      clientSecret: requireSecret(env, 'ENTRA_CLIENT_SECRET'),
      tenantId,
      allowedTenants: parseAllowedTenants(env, tenantId),
      issuer: parseUpstreamUrl(env, 'ENTRA_ISSUER', `https://login.microsoftonline.com/${tenantId}/v2.0`),
      scopes: parseScopes(env, 'ENTRA_SCOPES', 'User.Read Calendars.Read'),
    };
  }
  if (env.GOOGLE_CLIENT_ID) {
    upstreams.google = {
      clientId: env.GOOGLE_CLIENT_ID,
      clientSecret: requireSecret(env, 'GOOGLE_CLIENT_SECRET'),
      allowedDomains: parseList(env.GOOGLE_ALLOWED_DOMAINS).map((domain) => domain.toLowerCase()),
      issuer: parseUpstreamUrl(env, 'GOOGLE_ISSUER', 'https://accounts.google.com'),
      scopes: parseScopes(env, 'GOOGLE_SCOPES', 'https://www.googleapis.com/auth/calendar.readonly'),
    };
  }
  if (env.OWNERREZ_CLIENT_ID) {
    upstreams.ownerrez = {
      clientId: env.OWNERREZ_CLIENT_ID,
      clientSecret: requireSecret(env, 'OWNERREZ_CLIENT_SECRET'),
      authorizeUrl: parseUpstreamUrl(env, 'OWNERREZ_AUTHORIZE_URL', 'https://app.ownerrez.com/oauth/authorize'),
      apiUrl: parseUpstreamUrl(env, 'OWNERREZ_API_URL', 'https://api.ownerrez.com'),
      sendRedirectUriOnExchange: parseBoolean(env, 'OWNERREZ_SEND_REDIRECT_URI', true),
    };
  }
  return upstreams;
}

const BACKEND_PROVIDERS = ['entra', 'google', 'ownerrez'] as const;

/** MCP_BACKEND_URL needs MCP_BACKEND_PROVIDER: whose upstream token the backend receives; that provider must be enabled. */
function parseBackend(env: Env, upstreams: Config['upstreams']): Config['backend'] {
  if (!env.MCP_BACKEND_URL) {
    if (env.MCP_BACKEND_PROVIDER) throw new ConfigError('MCP_BACKEND_PROVIDER', 'set only together with MCP_BACKEND_URL');
    return undefined;
  }
  const url = parseUpstreamUrl(env, 'MCP_BACKEND_URL', env.MCP_BACKEND_URL);
  const provider = env.MCP_BACKEND_PROVIDER as (typeof BACKEND_PROVIDERS)[number];
  if (!BACKEND_PROVIDERS.includes(provider))
    throw new ConfigError('MCP_BACKEND_PROVIDER', `expected one of ${BACKEND_PROVIDERS.join(', ')}`);
  if (!upstreams[provider]) throw new ConfigError('MCP_BACKEND_PROVIDER', `${provider} is not enabled (set its client id)`);
  return { url, provider };
}

interface Secrets {
  encryptionKeys: KeyEntry[];
  cookieSecrets: string[];
}

/**
 * Production requires both secrets from the environment. Development generates them once into the
 * data folder (mode 0600) and says so loudly, so restarts keep sessions and sealed rows readable.
 */
function resolveSecrets(env: Env, production: boolean, dataDir: string, warn: (m: string) => void): Secrets {
  const keysText = env.ENCRYPTION_KEYS || (env.ENCRYPTION_KEY ? `k0:${env.ENCRYPTION_KEY}` : undefined);
  const cookieText = env.COOKIE_SECRET;
  if (production && !keysText) throw new ConfigError('ENCRYPTION_KEY', 'required when NODE_ENV=production (base64 of 32 random bytes)');
  if (production && !cookieText) throw new ConfigError('COOKIE_SECRET', 'required when NODE_ENV=production');

  let generated: { encryptionKey: string; cookieSecret: string } | undefined;
  if (!keysText || !cookieText) {
    const file = join(dataDir, 'dev-secrets.json');
    if (existsSync(file)) {
      generated = JSON.parse(readFileSync(file, 'utf8'));
    } else {
      generated = { encryptionKey: randomBytes(32).toString('base64'), cookieSecret: randomBytes(32).toString('base64url') };
      mkdirSync(dataDir, { recursive: true });
      writeFileSync(file, JSON.stringify(generated), { mode: 0o600 });
    }
    warn(`ENCRYPTION_KEY/COOKIE_SECRET not set: using development secrets generated in ${file}. Set both before production.`);
  }
  const encryptionKeys = parseKeyring(
    keysText ? (env.ENCRYPTION_KEYS ? 'ENCRYPTION_KEYS' : 'ENCRYPTION_KEY') : 'ENCRYPTION_KEY',
    keysText ?? `dev:${generated?.encryptionKey}`,
  );
  const cookieSecrets = parseList(cookieText ?? generated?.cookieSecret);
  if (cookieSecrets.some((secret) => secret.length < 32))
    throw new ConfigError('COOKIE_SECRET', 'each secret must be at least 32 characters');
  return { encryptionKeys, cookieSecrets };
}

function parseKeyring(variable: string, text: string): KeyEntry[] {
  const entries = parseList(text).map((item) => {
    const colon = item.indexOf(':');
    if (colon < 1) throw new ConfigError(variable, 'expected kid:base64key entries separated by commas');
    const kid = item.slice(0, colon);
    const key = Buffer.from(item.slice(colon + 1), 'base64');
    if (!/^[A-Za-z0-9_-]{1,32}$/.test(kid)) throw new ConfigError(variable, `kid "${kid}" must be 1-32 of A-Z a-z 0-9 _ -`);
    if (key.length !== 32) throw new ConfigError(variable, `key "${kid}" must be base64 of exactly 32 bytes`);
    return { kid, key };
  });
  if (entries.length === 0) throw new ConfigError(variable, 'no key given');
  if (new Set(entries.map((entry) => entry.kid)).size !== entries.length) throw new ConfigError(variable, 'duplicate kid');
  return entries;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function parseLogLevel(env: Env): string {
  const level = env.LOG_LEVEL || 'info';
  if (!LOG_LEVELS.includes(level)) throw new ConfigError('LOG_LEVEL', `expected one of ${LOG_LEVELS.join(', ')}`);
  return level;
}

function parseList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
}

/** Gatehouse is a confidential client upstream: an enabled provider without its secret could not sign anyone in. */
function requireSecret(env: Env, name: string): string {
  const secret = env[name];
  if (!secret) throw new ConfigError(name, `required when ${name.replace('_SECRET', '_ID')} is set`);
  return secret;
}

const ENTRA_MULTI_TENANT = new Set(['organizations', 'common', 'consumers']);

/**
 * The `tid`s allowed to sign in. A specific ENTRA_TENANT_ID allows only itself; a multi-tenant one
 * (`organizations`, `common`) would otherwise let any Microsoft organisation in, so it needs the list.
 */
function parseAllowedTenants(env: Env, tenantId: string): string[] {
  const listed = parseList(env.ENTRA_ALLOWED_TENANTS).map((tid) => tid.toLowerCase());
  if (!ENTRA_MULTI_TENANT.has(tenantId)) {
    if (listed.some((tid) => tid !== tenantId.toLowerCase()))
      throw new ConfigError(
        'ENTRA_ALLOWED_TENANTS',
        `ENTRA_TENANT_ID=${tenantId} allows only itself; unset ENTRA_ALLOWED_TENANTS or use a multi-tenant ENTRA_TENANT_ID`,
      );
    return [tenantId.toLowerCase()];
  }
  if (listed.length === 0)
    throw new ConfigError('ENTRA_ALLOWED_TENANTS', `required with ENTRA_TENANT_ID=${tenantId}: the tenant ids (tid) allowed to sign in`);
  return listed;
}

/** Space- or comma-separated scope names, as operators copy them from an IdP's portal. */
function parseScopes(env: Env, name: string, fallback: string): string[] {
  const scopes = (env[name] ?? fallback).split(/[\s,]+/).filter(Boolean);
  if (scopes.some((scope) => !/^[\x21\x23-\x5B\x5D-\x7E]{1,200}$/.test(scope)))
    throw new ConfigError(name, 'expected scope names (RFC 6749 §3.3)');
  return scopes;
}

function parseBoolean(env: Env, name: string, fallback: boolean): boolean {
  const value = env[name];
  if (value === undefined || value === '') return fallback;
  if (/^(1|true|yes|on)$/i.test(value)) return true;
  if (/^(0|false|no|off)$/i.test(value)) return false;
  throw new ConfigError(name, `expected true or false, got "${value}"`);
}

function parseInteger(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = env[name];
  if (value === undefined || value === '') return fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < min || number > max) throw new ConfigError(name, `expected an integer from ${min} to ${max}`);
  return number;
}

function parseOrigin(env: Env, name: string, fallback: string): string {
  const url = URL.parse(env[name] || fallback);
  if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) throw new ConfigError(name, 'expected an http(s) URL');
  if (url.pathname !== '/' || url.search || url.hash || url.username)
    throw new ConfigError(name, 'expected an origin with no path, query or credentials');
  return url.origin;
}

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** `http://` is accepted only for loopback hosts (local fakes in tests); everything else must be https. */
function parseUpstreamUrl(env: Env, name: string, fallback: string): string {
  const url = URL.parse(env[name] || fallback);
  if (!url) throw new ConfigError(name, 'expected a URL');
  if (url.protocol === 'https:') return url.href.replace(/\/$/, '');
  if (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) return url.href.replace(/\/$/, '');
  throw new ConfigError(name, 'must be https:// (http:// only for loopback hosts)');
}
