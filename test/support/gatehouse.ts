import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { type AppOverrides, buildApp } from '../../src/app.ts';
import { type Config, loadConfig } from '../../src/config.ts';

export interface TestGatehouse {
  url: string;
  app: FastifyInstance;
  config: Config;
  /** Every log line the app wrote, for canary greps. */
  logs: string[];
  databasePath: string;
  close(): Promise<void>;
}

/** A free loopback port; PUBLIC_URL must be known before the app is built. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** The env a test Gatehouse runs with: its own temp database and fixed test secrets. */
export function testEnv(port: number, overrides: Record<string, string> = {}): Record<string, string> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-test-'));
  return {
    NODE_ENV: 'test',
    PORT: String(port),
    PUBLIC_URL: `http://localhost:${port}`,
    DATABASE_PATH: join(dir, 'gatehouse.db'),
    ENCRYPTION_KEY: randomBytes(32).toString('base64'),
    COOKIE_SECRET: randomBytes(32).toString('base64url'),
    LOG_LEVEL: 'debug',
    ...overrides,
  };
}

/** A log destination that keeps every line, so tests can grep the logs for canaries. */
function captureLogs(): { logs: string[]; logStream: Writable } {
  const logs: string[] = [];
  const logStream = new Writable({
    write(chunk, _encoding, done) {
      logs.push(String(chunk));
      done();
    },
  });
  return { logs, logStream };
}

/** Builds the app as server.ts does and listens on 127.0.0.1 on a free port. */
export async function startGatehouse(env: Record<string, string> = {}, overrides: AppOverrides = {}): Promise<TestGatehouse> {
  const port = await freePort();
  const config = loadConfig(testEnv(port, env), () => {});
  const { logs, logStream } = captureLogs();
  const app = await buildApp(config, { logStream, ...overrides });
  await app.listen({ port, host: '127.0.0.1' });
  return {
    url: config.publicUrl,
    app,
    config,
    logs,
    databasePath: config.databasePath,
    close: async () => {
      await app.close();
      rmSync(join(config.databasePath, '..'), { recursive: true, force: true });
    },
  };
}

/** Builds the app without listening, for `app.inject` route tests. */
export async function buildTestApp(
  env: Record<string, string> = {},
  overrides: AppOverrides = {},
): Promise<{ app: FastifyInstance; config: Config; logs: string[] }> {
  const config = loadConfig(testEnv(3000, env), () => {});
  const { logs, logStream } = captureLogs();
  const app = await buildApp(config, { logStream, ...overrides });
  app.addHook('onClose', async () => rmSync(join(config.databasePath, '..'), { recursive: true, force: true }));
  return { app, config, logs };
}
