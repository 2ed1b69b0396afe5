import { createHash, randomBytes } from 'node:crypto';
import { approveWithDemoLogin } from './mcp-client.ts';
import { UserAgent } from './user-agent.ts';

/** A loopback redirect URI nothing listens on: the browser stops there and the test reads the code. */
export const LOOPBACK_REDIRECT = 'http://127.0.0.1:9/callback';

export interface RegisteredClient {
  client_id: string;
  client_secret?: string;
  registration_access_token?: string;
  registration_client_uri?: string;
  [field: string]: unknown;
}

/** Registers a client by DCR (RFC 7591); a public client with the loopback redirect unless told otherwise. */
export async function registerClient(origin: string, body: Record<string, unknown> = {}): Promise<RegisteredClient> {
  const response = await fetch(`${origin}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'Test Client', redirect_uris: [LOOPBACK_REDIRECT], token_endpoint_auth_method: 'none', ...body }),
  });
  if (response.status !== 201) throw new Error(`registration failed with ${response.status}: ${await response.text()}`);
  return (await response.json()) as RegisteredClient;
}

export interface AuthorizationRequest {
  url: string;
  verifier: string;
  state: string;
}

/** An OAuth 2.1 authorization request with PKCE S256 and, by default, the RFC 8707 resource. */
export function authorizationRequest(
  origin: string,
  options: { clientId: string; redirectUri?: string; scope?: string; resource?: string | null; state?: string },
): AuthorizationRequest {
  const verifier = randomBytes(32).toString('base64url');
  const state = options.state ?? randomBytes(12).toString('base64url');
  const params = new URLSearchParams({
    response_type: 'code',
    client_id: options.clientId,
    redirect_uri: options.redirectUri ?? LOOPBACK_REDIRECT,
    code_challenge: createHash('sha256').update(verifier).digest('base64url'),
    code_challenge_method: 'S256',
    state,
  });
  if (options.scope !== undefined) params.set('scope', options.scope);
  if (options.resource !== null) params.set('resource', options.resource ?? `${origin}/mcp`);
  return { url: `${origin}/authorize?${params}`, verifier, state };
}

/** Runs an authorization request through consent and the demo sign-in in a fresh browser; returns the code. */
export async function authorizeWithDemoLogin(
  origin: string,
  options: Parameters<typeof authorizationRequest>[1] & { user?: { email: string; name: string } },
): Promise<AuthorizationRequest & { code: string; redirectUri: string }> {
  const request = authorizationRequest(origin, options);
  const landed = await approveWithDemoLogin(
    new UserAgent(),
    origin,
    request.url,
    options.user ?? { email: 'tess@example.com', name: 'Tess' },
  );
  const code = landed.searchParams.get('code');
  if (!code) throw new Error(`no code at ${landed.origin}${landed.pathname}: ${landed.searchParams.get('error')}`);
  return { ...request, code, redirectUri: options.redirectUri ?? LOOPBACK_REDIRECT };
}

/** POSTs an application/x-www-form-urlencoded body, as /token, /revoke and /introspect expect. */
export function postForm(url: string, fields: Record<string, string>): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(fields).toString(),
  });
}

/** A token endpoint call; answers its status and JSON body. */
export async function tokenRequest(
  origin: string,
  fields: Record<string, string>,
): Promise<{ status: number; body: Record<string, string> }> {
  const response = await postForm(`${origin}/token`, fields);
  return { status: response.status, body: (await response.json()) as Record<string, string> };
}

/** A JSON-RPC POST to /mcp with the headers the Streamable HTTP transport sends. */
export function mcpPost(origin: string, accessToken: string, body: unknown, sessionId?: string): Promise<Response> {
  return fetch(`${origin}/mcp`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${accessToken}`,
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      'mcp-protocol-version': '2025-06-18',
      ...(sessionId ? { 'mcp-session-id': sessionId } : {}),
    },
    body: JSON.stringify(body),
  });
}

export const INITIALIZE = {
  jsonrpc: '2.0',
  id: 1,
  method: 'initialize',
  params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } },
};
