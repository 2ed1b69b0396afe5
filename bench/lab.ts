import { rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { freePort, testEnv } from '../test/support/gatehouse.ts';
import { sessionHeaders } from './scenarios.ts';
import { type RunningTarget, startTarget } from './target-client.ts';

/** Everything a benchmark setup started (processes, MCP clients, temp databases), closed together at the end. */
export interface Lab {
  /** A Gatehouse environment on a free port with its own temp database; tool-call rate limits lifted for the run. */
  env(overrides?: Record<string, string>): Promise<Record<string, string>>;
  start(...args: Parameters<typeof startTarget>): Promise<RunningTarget>;
  /** Keeps a connected SDK client open until the end (its session is the one the load joins). */
  keep(client: Client): void;
  /** An MCP session opened by the real SDK client (initialize + initialized), whose headers the load joins. */
  openSession(mcpUrl: URL, headers?: Record<string, string>): Promise<Record<string, string>>;
  close(): Promise<void>;
}

/**
 * Gatehouse allows 120 tool calls per minute per account and 600 per client by default; the benchmark
 * measures the path with its rate-limit check, not the 429s (the check's SQLite upsert still runs).
 */
const LIFTED_TOOL_LIMITS = { TOOL_CALLS_PER_MINUTE_PER_ACCOUNT: '1000000', TOOL_CALLS_PER_MINUTE_PER_CLIENT: '1000000' };

export function createLab(): Lab {
  const targets: RunningTarget[] = [];
  const clients: Client[] = [];
  const dirs: string[] = [];
  const lab: Lab = {
    async env(overrides = {}) {
      const env = testEnv(await freePort(), { LOG_LEVEL: 'silent', ...LIFTED_TOOL_LIMITS, ...overrides });
      dirs.push(dirname(env.DATABASE_PATH as string));
      return env;
    },
    async start(...args) {
      const target = await startTarget(...args);
      targets.push(target);
      return target;
    },
    keep: (client) => void clients.push(client),
    async openSession(mcpUrl, headers = {}) {
      const transport = new StreamableHTTPClientTransport(mcpUrl, { requestInit: { headers } });
      const client = new Client({ name: 'gatehouse-bench', version: '1.0.0' });
      await client.connect(transport);
      clients.push(client);
      return { ...sessionHeaders(transport), ...headers };
    },
    async close() {
      for (const client of clients) await client.close().catch(() => {});
      for (const target of targets) await target.close().catch(() => {});
      for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
    },
  };
  return lab;
}
