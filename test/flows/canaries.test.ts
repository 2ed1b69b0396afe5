import { existsSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { approveWithDemoLogin } from '../support/mcp-client.ts';
import { authorizationRequest, registerClient, tokenRequest } from '../support/oauth.ts';
import { UserAgent } from '../support/user-agent.ts';

/** Every byte SQLite has written: the main file and the write-ahead log (recent pages live there). */
function databaseBytes(path: string): string {
  return [path, `${path}-wal`]
    .filter(existsSync)
    .map((file) => readFileSync(file).toString('latin1'))
    .join('');
}

describe('secrets at rest and in logs', () => {
  let gatehouse: TestGatehouse;
  beforeAll(async () => {
    gatehouse = await startGatehouse();
  });
  afterAll(async () => gatehouse?.close());

  it('stores no token, code, session id, client secret or upstream token in clear in the database file or the logs', async () => {
    const origin = gatehouse.url;
    const redirectUri = 'https://claude.ai/api/mcp/auth_callback';
    const registration = await registerClient(origin, {
      client_name: 'Canary',
      redirect_uris: [redirectUri],
      token_endpoint_auth_method: 'client_secret_post',
    });
    const request = authorizationRequest(origin, { clientId: registration.client_id, redirectUri, resource: null });
    const agent = new UserAgent();
    const landed = await approveWithDemoLogin(agent, origin, request.url, { email: 'canary@example.com', name: 'Canary' });
    const code = landed.searchParams.get('code') as string;
    const verifier = request.verifier;
    const { body: tokens } = await tokenRequest(origin, {
      grant_type: 'authorization_code',
      code,
      code_verifier: verifier,
      redirect_uri: redirectUri,
      client_id: registration.client_id,
      client_secret: registration.client_secret as string,
    });
    expect(tokens.access_token).toBeTruthy();
    const mcp = await fetch(`${origin}/mcp`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.access_token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    await mcp.body?.cancel();

    const secrets = {
      code,
      verifier,
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token,
      clientSecret: registration.client_secret,
      registrationAccessToken: registration.registration_access_token,
    };
    // Cookie values carry the session id, interaction id, CSRF secret and browser binding.
    const cookies = Object.fromEntries(
      agent.cookieEntries().map(([name, value]) => [`cookie ${name}`, decodeURIComponent(value).split('.')[0]]),
    );
    const stored = databaseBytes(gatehouse.databasePath);
    const logs = gatehouse.logs.join('\n');
    for (const [name, value] of Object.entries({ ...secrets, ...cookies })) {
      expect(value, name).toBeTruthy();
      expect(stored.includes(value as string), `${name} in the database`).toBe(false);
      // The interaction id is also the /interaction/:uid path (oidc-provider binds it by the cookie's
      // signature, not its secrecy), so request logs may name it; every other value must not appear.
      if (!name.startsWith('cookie _interaction')) expect(logs.includes(value as string), `${name} in the logs`).toBe(false);
    }
    expect(Object.keys(cookies).length).toBeGreaterThanOrEqual(3);
    // The demo upstream's tokens are generated inside Gatehouse; their prefix must never be readable.
    expect(stored).not.toMatch(/demo_(at|rt)_/);
    expect(logs).not.toMatch(/demo_(at|rt)_/);
    // The upstream identity itself is not a secret, and is stored (it is what whoami shows).
    expect(stored).toContain('canary@example.com');
  });
});
