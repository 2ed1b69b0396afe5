import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { ToolListChangedNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { SessionTransport } from '../../src/mcp/transport.ts';

const AUTH: AuthInfo = { token: 'test', clientId: 'client', scopes: ['mcp'], extra: { accountId: 'account-1' } };
const JSON_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };

/** One session's transport on a loopback server, as `sessions.ts` drives it (body parsed before, AuthInfo given). */
async function startSession(): Promise<{
  url: string;
  transport: SessionTransport;
  mcp: McpServer;
  release(): void;
  close(): Promise<void>;
}> {
  const transport = new SessionTransport({ sessionId: 'session-1', onInitialized: () => {}, keepAliveMs: 50 });
  const mcp = new McpServer({ name: 'transport-test', version: '1.0.0' });
  let release = () => {};
  mcp.registerTool('echo', { inputSchema: { text: z.string() } }, async ({ text }, extra) => ({
    content: [{ type: 'text', text: `${text} for ${String(extra.authInfo?.extra?.accountId)}` }],
  }));
  mcp.registerTool('wait', { inputSchema: {} }, () => new Promise((resolve) => (release = () => resolve({ content: [] }))));
  await mcp.connect(transport);
  const server: Server = createServer(async (req, res) => {
    let text = '';
    for await (const chunk of req) text += chunk;
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    await transport.handleRequest(req, res, body, AUTH);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mcp`;
  return {
    url,
    transport,
    mcp,
    release: () => release(),
    close: async () => {
      await mcp.close();
      server.closeAllConnections();
      server.close();
    },
  };
}

let session: Awaited<ReturnType<typeof startSession>> | undefined;
afterEach(async () => {
  await session?.close();
  session = undefined;
});

async function connected() {
  session ??= await startSession();
  const transport = new StreamableHTTPClientTransport(new URL(session.url));
  const client = new Client({ name: 'transport-test-client', version: '1.0.0' });
  await client.connect(transport);
  return {
    client,
    transport,
    headers: { ...JSON_HEADERS, 'mcp-session-id': 'session-1', 'mcp-protocol-version': String(transport.protocolVersion) },
  };
}

const post = (url: string, headers: Record<string, string>, body: unknown) =>
  fetch(url, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });
/** initialize and notifications/initialized by hand, so no GET stream is opened (the SDK client opens one). */
async function initializedByHand(): Promise<Record<string, string>> {
  session = await startSession();
  const init = { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } };
  const opened = await post(session.url, JSON_HEADERS, { jsonrpc: '2.0', id: 0, method: 'initialize', params: init });
  expect(opened.headers.get('mcp-session-id')).toBe('session-1');
  await opened.text();
  const headers = { ...JSON_HEADERS, 'mcp-session-id': 'session-1', 'mcp-protocol-version': '2025-06-18' };
  expect((await post(session.url, headers, { jsonrpc: '2.0', method: 'notifications/initialized' })).status).toBe(202);
  return headers;
}
const call = (id: number | string, text = 'hi') => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name: 'echo', arguments: { text } },
});

describe('the session transport (MCP Streamable HTTP, JSON answers)', () => {
  it('serves the real SDK client: initialize, tools/list, tools/call with the AuthInfo it was handed', async () => {
    const { client, transport } = await connected();
    expect(transport.sessionId).toBe('session-1');
    expect((await client.listTools()).tools.map((tool) => tool.name)).toEqual(['echo', 'wait']);
    expect(await client.callTool({ name: 'echo', arguments: { text: 'hello' } })).toMatchObject({
      content: [{ type: 'text', text: 'hello for account-1' }],
    });
    await client.close();
  });

  it('delivers server-initiated notifications on the GET stream, one stream per session (409 for a second)', async () => {
    const { client, headers } = await connected();
    const changed = new Promise((resolve) => client.setNotificationHandler(ToolListChangedNotificationSchema, resolve));
    // The SDK client opens the GET stream after initialize; wait until the transport holds it.
    await expect
      .poll(async () => (await fetch(session?.url as string, { headers: { ...headers, accept: 'text/event-stream' } })).status)
      .toBe(409);
    session?.mcp.sendToolListChanged();
    await expect(changed).resolves.toMatchObject({ method: 'notifications/tools/list_changed' });
    await client.close();
  });

  it('answers a batch of two requests with an array in request order, and a notification alone with 202', async () => {
    const { headers } = await connected();
    const batch = await post(session?.url as string, headers, [call(10, 'a'), call(11, 'b')]);
    expect(batch.status).toBe(200);
    const answers = (await batch.json()) as { id: number; result: { content: { text: string }[] } }[];
    expect(batch.headers.get('transfer-encoding')).toBeNull(); // sent with its length, in one piece
    expect(Number(batch.headers.get('content-length'))).toBeGreaterThan(0);
    expect(answers.map((answer) => [answer.id, answer.result.content[0]?.text])).toEqual([
      [10, 'a for account-1'],
      [11, 'b for account-1'],
    ]);
    const notification = await post(session?.url as string, headers, {
      jsonrpc: '2.0',
      method: 'notifications/cancelled',
      params: { requestId: 99 },
    });
    expect(notification.status).toBe(202);
    expect(await notification.text()).toBe('');
  });

  it.each([
    ['an Accept without text/event-stream', { accept: 'application/json' }, call(1), 406, -32000],
    ['a text/plain body', { 'content-type': 'text/plain' }, call(1), 415, -32000],
    ['an unsupported protocol version', { 'mcp-protocol-version': '1999-01-01' }, call(1), 400, -32000],
    ['no session id', { 'mcp-session-id': '' }, call(1), 400, -32000],
    ['another session id', { 'mcp-session-id': 'session-2' }, call(1), 404, -32001],
    ['a message that is not JSON-RPC', {}, { jsonrpc: '1.0', id: 1, method: 'tools/list' }, 400, -32700],
    ['a request with an extra member', {}, { ...call(1), extra: true }, 400, -32700],
    ['a fractional id', {}, call(1.5), 400, -32700],
    ['array params', {}, { jsonrpc: '2.0', id: 1, method: 'tools/list', params: [] }, 400, -32700],
    ['an empty batch', {}, [], 400, -32700],
    ['a batch of 101', {}, Array.from({ length: 101 }, (_, i) => call(i)), 400, -32600],
    ['the same id twice in a batch', {}, [call(7), call(7)], 400, -32600],
    ['a second initialize', {}, { jsonrpc: '2.0', id: 1, method: 'initialize', params: {} }, 400, -32600],
  ])('refuses %s with the SDK transport’s status and JSON-RPC error', async (_name, override, body, status, code) => {
    const { headers } = await connected();
    const response = await post(session?.url as string, { ...headers, ...override }, body);
    expect(response.status).toBe(status);
    expect(await response.json()).toMatchObject({ jsonrpc: '2.0', id: null, error: { code } });
  });

  it('refuses a request before initialize (400) and a request whose id is already running (400)', async () => {
    session = await startSession();
    const early = await post(session.url, { ...JSON_HEADERS, 'mcp-session-id': 'session-1' }, call(1));
    expect(early.status).toBe(400);
    expect(await early.json()).toMatchObject({ error: { message: 'Bad Request: Server not initialized' } });

    const { headers } = await connected();
    const waiting = post(session.url, headers, {
      jsonrpc: '2.0',
      id: 'slow',
      method: 'tools/call',
      params: { name: 'wait', arguments: {} },
    });
    await expect
      .poll(async () => (await post(session?.url as string, headers, { jsonrpc: '2.0', id: 'slow', method: 'tools/list' })).status)
      .toBe(400);
    session.release();
    expect((await waiting).status).toBe(200);
  });

  it('ends the session on DELETE: the GET stream ends, a running call gets 404, later requests 404', async () => {
    const headers = await initializedByHand();
    const stream = await fetch(session?.url as string, { headers: { ...headers, accept: 'text/event-stream' } });
    expect(stream.status).toBe(200);
    expect(stream.headers.get('content-type')).toBe('text/event-stream');
    const reader = stream.body?.getReader();
    // The keep-alive comment (50 ms here) shows the stream is live before the session ends.
    expect(new TextDecoder().decode((await reader?.read())?.value)).toContain(': keepalive');
    const waiting = post(session?.url as string, headers, {
      jsonrpc: '2.0',
      id: 5,
      method: 'tools/call',
      params: { name: 'wait', arguments: {} },
    });
    await new Promise((resolve) => setTimeout(resolve, 50));

    const deleted = await fetch(session?.url as string, { method: 'DELETE', headers });
    expect(deleted.status).toBe(200);
    expect((await waiting).status).toBe(404);
    let ended = false;
    while (!ended) ended = (await reader?.read())?.done ?? true;
    expect((await post(session?.url as string, headers, call(6))).status).toBe(404);
  });
});
