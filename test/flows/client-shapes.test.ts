import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { approveWithDemoLogin } from '../support/mcp-client.ts';
import { INITIALIZE, mcpPost } from '../support/oauth.ts';
import { UserAgent } from '../support/user-agent.ts';

interface Shape {
  register: { redirect_uris: string[]; token_endpoint_auth_method?: string } & Record<string, unknown>;
}
const shapes = JSON.parse(readFileSync(new URL('../../../shared/fixtures/client-shapes.json', import.meta.url), 'utf8')) as Record<
  string,
  Shape
>;

/** How each client runs its authorization request, as DESIGN.md §4 and the fixture's notes describe it. */
const CASES: { name: string; redirectUri?: string; omitScope?: boolean }[] = [
  { name: 'chatgpt', omitScope: true }, // reconnects without scope
  { name: 'claude_ai' }, // client_secret_post with the secret DCR returned
  { name: 'claude_code', redirectUri: 'http://localhost:61023/callback' }, // another ephemeral port than registered (RFC 8252 §7.3)
  { name: 'vscode', redirectUri: 'http://127.0.0.1:33418/' },
  { name: 'cursor' }, // private-use scheme cursor://
  { name: 'mcp_inspector' }, // registers with scope: ""
];

describe('real MCP client shapes register, authorize and get tokens', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());

  it.each(CASES)('$name: DCR, /authorize with consent and demo login, then /token', async ({ name, redirectUri, omitScope }) => {
    const shape = shapes[name];
    if (!shape) throw new Error(`no ${name} in the fixture`);

    const registered = await fetch(`${gatehouse.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(shape.register),
    });
    expect(registered.status).toBe(201);
    const client = (await registered.json()) as { client_id: string; client_secret?: string; redirect_uris: string[] };
    expect(client.redirect_uris).toEqual(shape.register.redirect_uris);
    const secretPost = shape.register.token_endpoint_auth_method === 'client_secret_post';
    if (secretPost) expect(client.client_secret).toEqual(expect.any(String));

    const redirect = redirectUri ?? (shape.register.redirect_uris[0] as string);
    const verifier = randomBytes(32).toString('base64url');
    const authorize = new URL('/authorize', gatehouse.url);
    authorize.search = new URLSearchParams({
      response_type: 'code',
      client_id: client.client_id,
      redirect_uri: redirect,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      state: `state-${name}`,
      resource: gatehouse.config.resourceUrl,
      ...(omitScope ? {} : { scope: 'mcp' }),
    }).toString();

    // The browser leaves Gatehouse for the client's redirect URI; the code is in that last URL.
    const landed = await approveWithDemoLogin(new UserAgent(), gatehouse.url, authorize.href, {
      email: `${name}@example.com`,
      name: `User of ${name}`,
    });
    expect(landed.href.startsWith(redirect)).toBe(true);
    expect(landed.searchParams.get('error')).toBeNull();
    expect(landed.searchParams.get('state')).toBe(`state-${name}`);
    expect(landed.searchParams.get('iss')).toBe(gatehouse.config.publicUrl);
    const code = landed.searchParams.get('code');
    expect(code).toEqual(expect.any(String));

    const token = await fetch(`${gatehouse.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'authorization_code',
        code: code as string,
        code_verifier: verifier,
        redirect_uri: redirect,
        client_id: client.client_id,
        ...(secretPost ? { client_secret: client.client_secret as string } : {}),
      }).toString(),
    });
    const tokens = (await token.json()) as Record<string, unknown>;
    expect(token.status, JSON.stringify(tokens)).toBe(200);
    expect(tokens).toMatchObject({
      token_type: 'Bearer',
      scope: 'mcp',
      access_token: expect.any(String),
      refresh_token: expect.any(String),
    });

    // The token is good for the MCP endpoint: the gate accepts it (no 401), whatever the JSON-RPC says.
    const mcp = await mcpPost(gatehouse.url, tokens.access_token as string, {
      ...INITIALIZE,
      params: { ...INITIALIZE.params, clientInfo: { name, version: '1.0.0' } },
    });
    expect(mcp.status).toBe(200);
    await mcp.body?.cancel();
  });
});
