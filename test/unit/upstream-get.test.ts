import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { USER_AGENT, upstreamGet } from '../../src/upstream/http.ts';
import { UpstreamGrantError } from '../../src/upstream/types.ts';

let server: Server;
let origin: string;
let seen: IncomingHttpHeaders | undefined;

beforeAll(async () => {
  server = createServer((req, res) => {
    seen = req.headers;
    const path = req.url ?? '/';
    if (path === '/json') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    if (path === '/empty') return void res.writeHead(204).end();
    if (path === '/bom') return void res.writeHead(200, { 'set-cookie': ['a=1', 'b=2'] }).end(Buffer.from('\ufeff{"é":1}', 'utf8'));
    if (path === '/html') return void res.writeHead(502, { 'content-type': 'text/html' }).end('<html>bad gateway</html>');
    if (path === '/moved') return void res.writeHead(302, { location: 'http://169.254.169.254/' }).end();
    if (path === '/huge') {
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1024 * 1024, 'a');
      for (let i = 0; i < 17; i++) res.write(chunk);
      return void res.end();
    }
    if (path === '/silent') return; // never answers
    if (path === '/cut') {
      res.writeHead(200, { 'content-length': '100' });
      res.write('{"partial":');
      return void setTimeout(() => req.socket.destroy(), 10);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => {
  server.closeAllConnections();
  server.close();
});

async function failure(path: string, timeoutMs?: number): Promise<UpstreamGrantError> {
  const error = await upstreamGet('Google', new URL(path, origin), {}, timeoutMs).catch((caught: unknown) => caught);
  expect(error).toBeInstanceOf(UpstreamGrantError);
  expect((error as UpstreamGrantError).kind).toBe('transient');
  return error as UpstreamGrantError;
}

describe('upstreamGet: the tools’ upstream API client', () => {
  it('sends the caller’s headers with Gatehouse’s User-Agent and answers with status, headers and body', async () => {
    const response = await upstreamGet('Google', new URL('/json', origin), { authorization: 'Bearer CANARY-x', 'user-agent': 'spoofed' });
    expect(seen?.authorization).toBe('Bearer CANARY-x');
    expect(seen?.['user-agent']).toBe(USER_AGENT);
    expect([response.status, response.ok]).toEqual([200, true]);
    expect(response.headers.get('Content-Type')).toBe('application/json');
    expect(response.headers.get('x-absent')).toBeNull();
    expect(await response.json()).toEqual({ ok: true });
  });

  it('reads a body as Response.text() and .json() would: UTF-8 without its byte-order mark; a repeated header joined', async () => {
    const answer = await upstreamGet('Google', new URL('/bom', origin), {});
    expect(await answer.text()).toBe('{"é":1}');
    expect(await answer.json()).toEqual({ é: 1 });
    expect(answer.headers.get('set-cookie')).toBe('a=1, b=2');
  });

  it('answers a failure status as it is, with a body that is not JSON refused by json()', async () => {
    const answer = await upstreamGet('Google', new URL('/html', origin), {});
    expect([answer.status, answer.ok]).toEqual([502, false]);
    await expect(answer.json()).rejects.toThrow(SyntaxError);
  });

  it('answers 204 with no body, and a redirect as it is, without following it', async () => {
    const empty = await upstreamGet('Google', new URL('/empty', origin), {});
    expect([empty.status, await empty.text()]).toEqual([204, '']);
    await expect(empty.json()).rejects.toThrow(SyntaxError);
    const moved = await upstreamGet('Google', new URL('/moved', origin), {});
    expect([moved.status, moved.headers.get('location')]).toEqual([302, 'http://169.254.169.254/']);
  });

  it('refuses an answer over 16 MiB instead of holding it, and says so without the URL', async () => {
    const error = await failure('/huge');
    expect(error.message).toBe('Google sent an answer too large to read');
  });

  it('gives up on an upstream that does not answer in time, and on one that drops the connection mid-answer', async () => {
    expect((await failure('/silent', 200)).message).toBe('Google did not answer in time');
    expect((await failure('/cut')).message).toBe('Google could not be reached');
    expect((await failure('http://127.0.0.1:1/')).message).toBe('Google could not be reached');
  });
});
