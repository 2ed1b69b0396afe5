import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { OAuthError } from '../../src/errors.ts';
import { classifyRedirectUri, isLoopbackOnly, sanitizeRegistration } from '../../src/oauth/registration-policy.ts';

const policy = { supportedScopes: ['mcp', 'openid', 'email'] };
const shapes = JSON.parse(readFileSync(new URL('../../../shared/fixtures/client-shapes.json', import.meta.url), 'utf8')) as Record<
  string,
  { register?: Record<string, unknown> }
>;
const clients = Object.entries(shapes).flatMap(([name, shape]) => (shape.register ? [[name, shape.register] as const] : []));
const base = { client_name: 'Test', redirect_uris: ['https://a.example/cb'] };

/** Runs `fn` and returns the OAuthError it threw; fails the test on any other outcome. */
function oauthErrorOf(fn: () => unknown): OAuthError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(OAuthError);
    return error as OAuthError;
  }
  throw new Error('expected an OAuthError, but nothing was thrown');
}

const register = (body: unknown) => sanitizeRegistration(body, policy);

describe('sanitizeRegistration: bodies real MCP clients send', () => {
  it('finds the client shapes in the fixture', () => {
    expect(clients.map(([name]) => name)).toEqual(expect.arrayContaining(['chatgpt', 'claude_ai', 'vscode', 'cursor']));
  });

  it.each(clients)('accepts the %s registration and keeps every redirect URI', (_name, body) => {
    const out = register(body);
    expect(out.redirect_uris).toEqual(body.redirect_uris);
    expect(out.client_name).toBe(body.client_name);
  });

  it("keeps VS Code's four redirect URIs, https and loopback, as a native client", () => {
    const out = register(shapes.vscode?.register);
    expect(out.redirect_uris).toHaveLength(4);
    expect(out.application_type).toBe('native');
  });

  it("forces native for Cursor's mix of private-use, https and loopback URIs (RFC 8252)", () => {
    expect(shapes.cursor?.register?.application_type).toBeUndefined();
    expect(register(shapes.cursor?.register).application_type).toBe('native');
  });

  it('forces native for a loopback-only client so any port matches (RFC 8252 §7.3)', () => {
    expect(register(shapes.claude_code?.register).application_type).toBe('native');
    expect(register({ ...base, redirect_uris: ['http://[::1]/cb'], application_type: 'web' }).application_type).toBe('native');
  });

  it('leaves application_type absent for an https-only client (web by default)', () => {
    expect(register(shapes.chatgpt?.register)).not.toHaveProperty('application_type');
  });

  it('drops Claude.ai\'s scope "claudeai" instead of failing', () => {
    expect(register(shapes.claude_ai?.register)).not.toHaveProperty('scope');
  });

  it('keeps token_endpoint_auth_method none, client_secret_post, or leaves it absent', () => {
    expect(register(shapes.chatgpt?.register).token_endpoint_auth_method).toBe('none');
    expect(register(shapes.claude_ai?.register).token_endpoint_auth_method).toBe('client_secret_post');
    expect(register(base)).not.toHaveProperty('token_endpoint_auth_method');
  });
});

describe('sanitizeRegistration: scope', () => {
  it('leaves an absent scope absent', () => {
    expect(register(base)).not.toHaveProperty('scope');
  });

  it.each(['', '   ', '\t'])('removes an empty or blank scope %j', (scope) => {
    expect(register({ ...base, scope })).not.toHaveProperty('scope');
  });

  it('drops unknown scopes instead of failing (MCP clients send their own)', () => {
    expect(register({ ...base, scope: 'email claudeai  mcp email admin' }).scope).not.toContain('claudeai');
  });

  it('registers every supported scope when the client names one, so it can step up later (MCP 2025-11-25)', () => {
    expect(register({ ...base, scope: 'mcp' }).scope).toBe('mcp openid email');
  });

  it('removes the scope when no requested scope is supported', () => {
    expect(register({ ...base, scope: 'claudeai admin' })).not.toHaveProperty('scope');
  });
});

describe('sanitizeRegistration: redirect URIs (RFC 7591 §2, RFC 8252, RFC 6749 §3.1.2)', () => {
  const hostile: [string, string | string[]][] = [
    ['javascript: scheme', 'javascript:alert(1)'],
    ['data: scheme', 'data:text/html,x'],
    ['file: scheme', 'file:///etc/passwd'],
    ['a fragment', 'https://a.example/cb#frag'],
    ['userinfo', 'https://user:pw@a.example/cb'],
    ['a wildcard host', 'https://*.example.com/cb'],
    ['a wildcard path', 'https://a.example/*'],
    ['http to a public host', 'http://example.com/cb'],
    ['http to a host that starts with localhost', 'http://localhost.evil.com/cb'],
    ['http to a host that starts with 127.0.0.1', 'http://127.0.0.1.nip.io/cb'],
    ['http to 127.0.0.1 spelled as a number', 'http://2130706433/cb'],
    ['https to a loopback host', 'https://localhost/cb'],
    ['a private-use scheme without a dot', 'customscheme:/x'],
    ['ftp with a dotted host', 'ftp://files.example.com/cb'],
    ['a leading space', ' https://a.example/cb'],
    ['a newline', 'https://a.example/cb\n'],
    ['a backslash', 'https://a.example\\@evil.example/cb'],
    ['an unparsable URI', 'a.example/cb'],
    ['an out-of-range port', 'http://127.0.0.1:99999/cb'],
    ['a 3000-character URI', `https://a.example/${'a'.repeat(3000)}`],
    ['eleven URIs', Array.from({ length: 11 }, (_, i) => `https://a.example/cb${i}`)],
    ['no URIs', []],
  ];

  it.each(hostile)('refuses %s with invalid_redirect_uri', (_why, uris) => {
    const error = oauthErrorOf(() => register({ ...base, redirect_uris: Array.isArray(uris) ? uris : [uris] }));
    expect(error.code).toBe('invalid_redirect_uri');
    expect(error.status).toBe(400);
    // RFC 6749 §5.2: error_description is limited to printable ASCII without '"' and '\'.
    expect(error.message).toMatch(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/);
  });

  it('refuses the whole registration when one of several URIs is bad', () => {
    const error = oauthErrorOf(() => register({ ...base, redirect_uris: ['https://a.example/cb', 'http://evil.example/cb'] }));
    expect(error.code).toBe('invalid_redirect_uri');
    expect(error.message).toContain('http://evil.example/cb');
  });

  it('names the problem without echoing a huge or unsafe value', () => {
    const error = oauthErrorOf(() => register({ ...base, redirect_uris: [`https://a.example/"\\${'a'.repeat(3000)}`] }));
    expect(error.message).toMatch(/longer than 2000/);
    expect(error.message.length).toBeLessThan(200);
    expect(error.message).toMatch(/^[\x20-\x21\x23-\x5b\x5d-\x7e]+$/);
  });

  it('refuses a missing redirect_uris with invalid_redirect_uri', () => {
    expect(oauthErrorOf(() => register({ client_name: 'x' })).code).toBe('invalid_redirect_uri');
  });

  it('accepts loopback http on any port or none, and reverse-DNS private-use schemes', () => {
    const uris = ['http://localhost/cb', 'http://127.0.0.1:8080/', 'http://[::1]:1/x', 'com.example.app:/cb'];
    expect(register({ ...base, redirect_uris: uris }).redirect_uris).toEqual(uris);
  });

  it('removes duplicate redirect URIs, keeping their order', () => {
    const uris = ['https://b.example/cb', 'https://a.example/cb', 'https://b.example/cb'];
    expect(register({ ...base, redirect_uris: uris }).redirect_uris).toEqual(['https://b.example/cb', 'https://a.example/cb']);
  });
});

describe('classifyRedirectUri and isLoopbackOnly', () => {
  it.each([
    ['https://claude.ai/api/mcp/auth_callback', 'https'],
    ['http://localhost:6274/oauth/callback', 'loopback'],
    ['http://127.0.0.1/', 'loopback'],
    ['cursor://anysphere.cursor-mcp/oauth/callback', 'private-use'],
    ['com.example.app:/cb', 'private-use'],
  ])('classifies %s as %s', (uri, kind) => {
    expect(classifyRedirectUri(uri)).toBe(kind);
  });

  it('says a client is loopback-only when every redirect URI is loopback http', () => {
    expect(isLoopbackOnly(['http://localhost:56648/callback', 'http://127.0.0.1/'])).toBe(true);
    expect(isLoopbackOnly(['http://localhost:8787/callback', 'https://www.cursor.com/cb'])).toBe(false);
    expect(isLoopbackOnly(['myapp:/cb'])).toBe(false);
    expect(isLoopbackOnly([])).toBe(false);
  });
});

describe('sanitizeRegistration: metadata types and sizes (RFC 7591 §3.2.2 invalid_client_metadata)', () => {
  it.each([
    ['null', null],
    ['an array', [base]],
    ['a string', JSON.stringify(base)],
  ])('refuses a body that is %s', (_what, body) => {
    expect(oauthErrorOf(() => register(body)).code).toBe('invalid_client_metadata');
  });

  it.each([
    ['redirect_uris as a string', { redirect_uris: 'https://x.example/cb' }],
    ['redirect_uris with a number', { redirect_uris: ['https://x.example/cb', 5] }],
    ['client_name as a number', { client_name: 5 }],
    ['grant_types as a string', { grant_types: 'authorization_code' }],
    ['a 201-character client_name', { client_name: 'x'.repeat(201) }],
    ['a 2001-character logo_uri', { logo_uri: `https://a.example/${'a'.repeat(2000)}` }],
    ['six contacts', { contacts: Array.from({ length: 6 }, (_, i) => `a${i}@a.example`) }],
    ['an unknown token_endpoint_auth_method', { token_endpoint_auth_method: 'private_key_jwt' }],
    ['an unknown application_type', { application_type: 'browser' }],
    ['the implicit grant', { grant_types: ['authorization_code', 'implicit'] }],
    ['the token response type', { response_types: ['code', 'token'] }],
  ])('refuses %s', (_what, fields) => {
    expect(oauthErrorOf(() => register({ ...base, ...fields })).code).toBe('invalid_client_metadata');
  });

  it('accepts client_name at the 200-character cap', () => {
    expect(register({ ...base, client_name: 'x'.repeat(200) }).client_name).toHaveLength(200);
  });

  it('drops unknown fields instead of echoing them or failing', () => {
    const out = register({ ...base, client_id: 'chosen-by-client', client_secret: 's', jwks: {}, extra: { a: 1 } });
    expect(Object.keys(out).sort()).toEqual(['client_name', 'redirect_uris']);
  });

  it('keeps software_id and software_version (RFC 7591 §2), capped at 200 characters', () => {
    expect(register({ ...base, software_id: 'vscode', software_version: '1.106' })).toMatchObject({
      software_id: 'vscode',
      software_version: '1.106',
    });
    expect(() => register({ ...base, software_id: 'x'.repeat(201) })).toThrow(/software_id must be at most 200 characters/);
  });

  it('treats null optional fields as absent', () => {
    expect(register({ ...base, client_uri: null, scope: null, contacts: null })).toEqual(base);
  });
});
