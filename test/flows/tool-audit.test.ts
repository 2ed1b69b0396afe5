import { spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { Writable } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import Database from 'better-sqlite3';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { connectWithLogin, TestOAuthClient } from '../support/mcp-client.ts';
import { authorizeWithDemoLogin, INITIALIZE, mcpPost, registerClient, tokenRequest } from '../support/oauth.ts';

const CANARY = 'canary-tool-argument-5d1f';
type Connected = Awaited<ReturnType<typeof connectWithLogin>>;

const toolsCall = (name: string, args: Record<string, unknown> = {}, id = 7) => ({
  jsonrpc: '2.0',
  id,
  method: 'tools/call',
  params: { name, arguments: args },
});

/** What the SDK client throws when /mcp answers a tools/call with an HTTP error. */
async function httpErrorOf(call: Promise<unknown>): Promise<StreamableHTTPError> {
  const error = await call.then(
    () => undefined,
    (thrown: unknown) => thrown,
  );
  if (!(error instanceof StreamableHTTPError)) throw new Error(`expected an HTTP error, got ${String(error)}`);
  return error;
}

/** A raw MCP session for a token obtained outside the SDK (to choose its scope). */
async function rawSession(origin: string, accessToken: string): Promise<string> {
  const response = await mcpPost(origin, accessToken, INITIALIZE);
  expect(response.status).toBe(200);
  return response.headers.get('mcp-session-id') as string;
}

async function tokenFor(origin: string, scope: string, email: string): Promise<string> {
  const client = await registerClient(origin);
  const { code, verifier, redirectUri } = await authorizeWithDemoLogin(origin, {
    clientId: client.client_id,
    scope,
    user: { email, name: email },
  });
  const { status, body } = await tokenRequest(origin, {
    grant_type: 'authorization_code',
    code,
    code_verifier: verifier,
    redirect_uri: redirectUri,
    client_id: client.client_id,
  });
  expect(status).toBe(200);
  expect(body.scope).toBe(scope);
  return body.access_token as string;
}

describe('tool-call rate limits and audit (issue 4)', () => {
  let gatehouse: TestGatehouse;
  let app: FastifyInstance;
  let ada: Connected;
  let grace: Connected;
  const secrets: string[] = [];

  beforeAll(async () => {
    gatehouse = await startGatehouse({
      TOOL_CALLS_PER_MINUTE_PER_ACCOUNT: '3',
      TOOL_CALLS_PER_MINUTE_PER_CLIENT: '5',
      // Google is enabled (never reached: nobody signs in with it) so that its tools need a scope the demo's `mcp` lacks.
      DEMO_LOGIN: 'true',
      GOOGLE_CLIENT_ID: 'google-client-id',
      GOOGLE_CLIENT_SECRET: 'google-secret',
      GOOGLE_ISSUER: 'http://127.0.0.1:9',
    });
    app = gatehouse.app;
  });
  afterAll(async () => {
    await Promise.all([ada?.client.close(), grace?.client.close()]);
    await app?.close();
    if (gatehouse) rmSync(dirname(gatehouse.databasePath), { recursive: true, force: true });
  });

  it('answers the tool call over the per-account limit with 429, Retry-After and a body naming the limit', async () => {
    ada = await connectWithLogin(gatehouse.url, { user: { email: 'ada@example.com', name: 'Ada' } });
    for (let call = 0; call < 3; call++) expect((await ada.client.callTool({ name: 'whoami', arguments: {} })).isError).toBeFalsy();
    const refused = await httpErrorOf(ada.client.callTool({ name: 'whoami', arguments: {} }));
    expect(refused.code).toBe(429);
    expect(refused.message).toContain('this account may make 3 tool calls per minute');

    const accessToken = ada.oauth.savedTokens?.access_token as string;
    secrets.push(accessToken, ada.oauth.savedTokens?.refresh_token as string);
    const raw = await mcpPost(gatehouse.url, accessToken, toolsCall('whoami', { note: CANARY }), ada.transport.sessionId);
    expect(raw.status).toBe(429);
    const retryAfter = Number(raw.headers.get('retry-after'));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(20); // 60 s / 3 calls
    expect(await raw.json()).toEqual({
      error: 'rate_limited',
      error_description: `this account may make 3 tool calls per minute; retry in ${retryAfter} s`,
    });
    // A JSON-RPC batch is checked call by call too; requests that are not tool calls are not limited.
    const batch = await mcpPost(
      gatehouse.url,
      accessToken,
      [toolsCall('whoami', {}, 8), toolsCall('whoami', {}, 9)],
      ada.transport.sessionId,
    );
    expect(batch.status).toBe(429);
    expect((await ada.client.listTools()).tools.map((tool) => tool.name)).toContain('whoami');
  });

  it('does not limit another user of another client', async () => {
    grace = await connectWithLogin(gatehouse.url, { user: { email: 'grace@example.com', name: 'Grace' } });
    for (let call = 0; call < 2; call++) expect((await grace.client.callTool({ name: 'whoami', arguments: {} })).isError).toBeFalsy();
  });

  it('counts every user of one client against the per-client limit', async () => {
    const bob = await connectWithLogin(gatehouse.url, { user: { email: 'bob@example.com', name: 'Bob' } });
    const shared = new TestOAuthClient();
    shared.clientInfo = bob.oauth.clientInfo; // the same MCP client, another person
    const carol = await connectWithLogin(gatehouse.url, { user: { email: 'carol@example.com', name: 'Carol' }, oauth: shared });
    for (let call = 0; call < 3; call++) await bob.client.callTool({ name: 'whoami', arguments: {} });
    for (let call = 0; call < 2; call++) expect((await carol.client.callTool({ name: 'whoami', arguments: {} })).isError).toBeFalsy();
    const refused = await httpErrorOf(carol.client.callTool({ name: 'whoami', arguments: {} }));
    expect(refused.code).toBe(429);
    expect(refused.message).toContain('this client may make 5 tool calls per minute');
    await Promise.all([bob.client.close(), carol.client.close()]);
  });

  it('audits allowed calls, tool errors, step-up denials and rate-limit refusals, with no argument or token', async () => {
    // Step-up: a token with only the base scope calls a Google tool (403 insufficient_scope, before the tool runs).
    const baseToken = await tokenFor(gatehouse.url, 'mcp', 'tess@example.com');
    const denied = await mcpPost(
      gatehouse.url,
      baseToken,
      toolsCall('google_calendar_list_events', { query: CANARY }),
      await rawSession(gatehouse.url, baseToken),
    );
    expect(denied.status).toBe(403);
    // With the scope, the tool runs and fails: this user has no Google account connected.
    const googleToken = await tokenFor(gatehouse.url, 'mcp google.calendar', 'uma@example.com');
    const failed = await mcpPost(
      gatehouse.url,
      googleToken,
      toolsCall('google_calendar_list_events', { query: CANARY }),
      await rawSession(gatehouse.url, googleToken),
    );
    expect(failed.status).toBe(200);
    expect((await failed.json()).result.isError).toBe(true);
    secrets.push(baseToken, googleToken);
    const db = new Database(gatehouse.databasePath, { readonly: true });
    // Audit rows are written every 100 ms (FLUSH_MS): wait for the last call's.
    const lastCall = db.prepare("SELECT count(*) FROM tool_audit WHERE tool = 'google_calendar_list_events' AND decision = 'allowed'");
    await expect.poll(() => lastCall.pluck().get()).toBe(1);
    const rows = db
      .prepare(
        `SELECT a.email, t.tool, t.decision, t.outcome, t.upstream_status AS upstreamStatus, t.duration_ms AS durationMs
         FROM tool_audit t JOIN upstream_accounts a ON a.account_id = t.account_id ORDER BY t.id`,
      )
      .all() as { email: string; tool: string; decision: string; outcome: string | null; durationMs: number | null }[];
    const columns = db.prepare('SELECT name FROM pragma_table_info(?)').pluck().all('tool_audit');
    db.close();
    const summary = (email: string) => rows.filter((row) => row.email === email).map((row) => `${row.tool} ${row.decision} ${row.outcome}`);
    // Three refusals of Ada's in one second leave one row (a refusal is audited at most once a second per key).
    const adas = summary('ada@example.com');
    expect(adas.slice(0, 4)).toEqual([...Array(3).fill('whoami allowed ok'), 'whoami rate_limited_account null']);
    expect(new Set(adas.slice(3))).toEqual(new Set(['whoami rate_limited_account null']));
    expect(summary('carol@example.com')).toEqual([...Array(2).fill('whoami allowed ok'), 'whoami rate_limited_client null']);
    expect(summary('tess@example.com')).toEqual(['google_calendar_list_events insufficient_scope null']);
    expect(summary('uma@example.com')).toEqual(['google_calendar_list_events allowed tool_error']);
    expect(rows.filter((row) => row.decision === 'allowed').every((row) => typeof row.durationMs === 'number')).toBe(true);
    expect(columns).toEqual(['id', 'at', 'account_id', 'client_id', 'tool', 'decision', 'outcome', 'upstream_status', 'duration_ms']);

    expect(gatehouse.logs.join('\n')).not.toContain(CANARY);
    for (const file of [gatehouse.databasePath, `${gatehouse.databasePath}-wal`]) {
      const bytes = readFileSync(file, 'latin1');
      expect(bytes.includes(CANARY), file).toBe(false);
      for (const secret of secrets) expect(bytes.includes(secret), file).toBe(false);
    }
  });

  it('keeps the limits across a restart of Gatehouse on the same database file', async () => {
    // Grace has one call left of three; Ada none.
    await Promise.all([ada.client.close(), grace.client.close()]);
    await app.close();
    app = await buildApp(gatehouse.config, { logStream: new Writable({ write: (_chunk, _encoding, done) => done() }) });
    await app.listen({ port: gatehouse.config.port, host: '127.0.0.1' });

    const reconnect = async (oauth: TestOAuthClient) => {
      const client = new Client({ name: 'flow-test', version: '1.0.0' });
      await client.connect(new StreamableHTTPClientTransport(new URL('/mcp', gatehouse.url), { authProvider: oauth }));
      return client;
    };
    const adaAgain = await reconnect(ada.oauth);
    expect((await httpErrorOf(adaAgain.callTool({ name: 'whoami', arguments: {} }))).code).toBe(429);
    const graceAgain = await reconnect(grace.oauth);
    expect((await graceAgain.callTool({ name: 'whoami', arguments: {} })).isError).toBeFalsy();
    expect((await httpErrorOf(graceAgain.callTool({ name: 'whoami', arguments: {} }))).code).toBe(429);
    await Promise.all([adaAgain.close(), graceAgain.close()]);
  });

  it('shows the operator the latest tool calls of one account (`npm run gatehouse -- audit`)', async () => {
    const db = new Database(gatehouse.databasePath, { readonly: true });
    const adaId = db.prepare("SELECT account_id FROM upstream_accounts WHERE email = 'ada@example.com'").pluck().get() as string;
    db.close();
    const { config } = gatehouse;
    const cli = (args: string[]) =>
      new Promise<{ code: number | null; stdout: string }>((resolve) => {
        const child = spawn(process.execPath, [new URL('../../src/cli.ts', import.meta.url).pathname, ...args], {
          cwd: dirname(config.databasePath),
          env: {
            PATH: process.env.PATH ?? '',
            NODE_ENV: 'test',
            DATABASE_PATH: config.databasePath,
            ENCRYPTION_KEYS: config.encryptionKeys.map(({ kid, key }) => `${kid}:${key.toString('base64')}`).join(','),
            COOKIE_SECRET: config.cookieSecrets.join(','),
          },
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let stdout = '';
        child.stdout.on('data', (chunk) => {
          stdout += chunk;
        });
        child.once('close', (code) => resolve({ code, stdout }));
      });
    const listed = await cli(['audit', '--account', adaId, '--limit', '2']);
    expect(listed.code).toBe(0);
    const lines = listed.stdout.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z  ${adaId}  \\S+  whoami  rate_limited_account$`));
    expect(listed.stdout).not.toContain(CANARY);
    expect((await cli(['audit', '--limit', '0'])).code).toBe(2);
  });
});
