import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../support/gatehouse.ts';

const serverEntry = new URL('../../src/server.ts', import.meta.url).pathname;
const children: ChildProcess[] = [];
const dirs: string[] = [];

/** Runs `node src/server.ts` as `npm start` does, in an empty working directory. */
function startServer(env: Record<string, string>): { child: ChildProcess; output: () => string; exited: Promise<number | null> } {
  const cwd = mkdtempSync(join(tmpdir(), 'gatehouse-process-'));
  dirs.push(cwd);
  const child = spawn(process.execPath, [serverEntry], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let output = '';
  child.stdout?.on('data', (chunk) => {
    output += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    output += chunk;
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => output, exited };
}

async function waitForHealth(url: string): Promise<Response> {
  for (let attempt = 0; attempt < 100; attempt++) {
    try {
      return await fetch(`${url}/healthz`);
    } catch {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error('server did not come up');
}

afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('the server process (npm start)', () => {
  it('starts with the demo login and generated development secrets when nothing is configured, and stops cleanly on SIGTERM', async () => {
    const port = await freePort();
    const server = startServer({ PORT: String(port) });
    const health = await waitForHealth(`http://127.0.0.1:${port}`);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const metadata = (await (await fetch(`http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp`)).json()) as {
      resource: string;
    };
    expect(metadata.resource).toBe(`http://localhost:${port}/mcp`);
    expect(server.output()).toContain('DEMO_LOGIN is on');
    expect(server.output()).toContain('dev-secrets.json');
    server.child.kill('SIGTERM');
    expect(await server.exited).toBe(0);
  });

  it('refuses to start in production without ENCRYPTION_KEY, with one line naming the variable', async () => {
    const server = startServer({
      NODE_ENV: 'production',
      PUBLIC_URL: 'https://gatehouse.example.com',
      ENTRA_CLIENT_ID: 'x',
      ENTRA_CLIENT_SECRET: 'y',
      ENTRA_TENANT_ID: 'contoso',
    });
    expect(await server.exited).toBe(1);
    expect(server.output().trim()).toBe(
      'Gatehouse cannot start: ENCRYPTION_KEY: required when NODE_ENV=production (base64 of 32 random bytes)',
    );
  });
});
