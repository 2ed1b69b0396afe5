import type { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { TestOAuthClient } from '../test/support/mcp-client.ts';
import { type LoadOptions, type LoadRequest, probe } from './load.ts';

/** What one measured run sends and what counts as success. */
export type Scenario = Pick<LoadOptions, 'request' | 'expectStatus' | 'checkEveryBody'> & { bodyIncludes: string };

/** A scenario that is the same for every run. */
export const fixed = (scenario: Scenario) => async () => scenario;

const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
const WHOAMI = { name: 'whoami', arguments: {} };

export function bareRoute(): Scenario {
  return { request: { method: 'GET', path: '/', headers: {} }, expectStatus: 200, bodyIncludes: 'hello' };
}

/** A tools/call without an Authorization header: the gate answers before any MCP code runs. */
export function unauthenticatedCall(): Scenario {
  const request: LoadRequest = {
    method: 'POST',
    path: '/mcp',
    headers: { ...JSON_HEADERS, 'mcp-protocol-version': '2025-06-18' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: WHOAMI }),
  };
  return { request, expectStatus: 401, bodyIncludes: 'invalid_request' };
}

/** `tools/call whoami` with a fresh JSON-RPC id each time (the transport routes responses by id). */
export function callWhoami(headers: Record<string, string>): Scenario {
  return callTool(headers, WHOAMI, 'You are');
}

/**
 * `tools/call` of any tool on an open session, fresh JSON-RPC id each time. A tool that fails answers
 * 200 with `isError`, so every body must include `bodyIncludes` (words only a successful answer has).
 */
export function callTool(
  headers: Record<string, string>,
  params: { name: string; arguments: Record<string, unknown> },
  bodyIncludes: string,
  path = '/mcp',
): Scenario {
  let id = 0;
  return {
    request: () => ({
      method: 'POST',
      path,
      headers: { ...JSON_HEADERS, ...headers },
      body: JSON.stringify({ jsonrpc: '2.0', id: ++id, method: 'tools/call', params }),
    }),
    expectStatus: 200,
    bodyIncludes,
    checkEveryBody: true,
  };
}

/** The Calendar API request `google_calendar_list_calendars` makes, sent straight to the (fake) API with the upstream bearer. */
export function listCalendarsDirect(upstreamToken: string, bodyIncludes: string): Scenario {
  return {
    request: {
      method: 'GET',
      path: '/calendar/v3/users/me/calendarList?maxResults=250',
      headers: { authorization: `Bearer ${upstreamToken}` },
    },
    expectStatus: 200,
    bodyIncludes,
    checkEveryBody: true,
  };
}

/** The headers of an MCP session the SDK client opened: every benchmark request joins it. */
export function sessionHeaders(transport: StreamableHTTPClientTransport): Record<string, string> {
  if (!transport.sessionId || !transport.protocolVersion) throw new Error('the MCP session was not initialized');
  return { 'mcp-session-id': transport.sessionId, 'mcp-protocol-version': transport.protocolVersion };
}

/** `grant_type=refresh_token`, each request with the next unused token (a used one would be reuse, RFC 9700 §4.14.2). */
export function refreshGrant(tokens: readonly string[], clientId: string): Scenario {
  let next = 0;
  return {
    request: () => ({
      method: 'POST',
      path: '/token',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({
        grant_type: 'refresh_token',
        refresh_token: tokens[next++] ?? 'pool-exhausted',
        client_id: clientId,
      }).toString(),
    }),
    expectStatus: 200,
    bodyIncludes: 'refresh_token',
  };
}

/** The registration body the flow tests' client sends (a public client with a loopback redirect). */
const registrationBody = JSON.stringify(new TestOAuthClient().clientMetadata);

export function registration(): Scenario {
  return {
    request: { method: 'POST', path: '/register', headers: { 'content-type': 'application/json' }, body: registrationBody },
    expectStatus: 201,
    bodyIncludes: 'client_id',
  };
}

/** Registers one client over HTTP and returns its id. */
export async function registerClient(url: string): Promise<string> {
  const { request } = registration();
  const body = await probe(url, request as LoadRequest, { status: 201 });
  return (JSON.parse(body) as { client_id: string }).client_id;
}
