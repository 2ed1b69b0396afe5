import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './gatehouse.ts';

const serverEntry = new URL('../../src/server.ts', import.meta.url).pathname;

export interface GatehouseProcess {
  /** Where this process listens (`http://127.0.0.1:<port>`); its PUBLIC_URL may name another origin. */
  url: string;
  /** Everything it wrote to stdout and stderr (its log lines), for canary greps. */
  output(): string;
  /** SIGTERM, then SIGKILL if it has not exited within 5 s; removes its working directory. */
  stop(): Promise<void>;
}

/**
 * Runs `node src/server.ts` as a second Gatehouse process, in an empty working directory (no `.env`),
 * on its own loopback port. Two apps on one database must live in two processes: better-sqlite3 waits
 * for a busy lock synchronously, so two apps sharing one event loop would block each other.
 */
export async function startGatehouseProcess(env: Record<string, string>): Promise<GatehouseProcess> {
  const port = await freePort();
  const cwd = mkdtempSync(join(tmpdir(), 'gatehouse-process-'));
  const child: ChildProcess = spawn(process.execPath, [serverEntry], {
    cwd,
    env: { PATH: process.env.PATH ?? '', ...env, PORT: String(port), HOST: '127.0.0.1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (chunk) => {
    output += chunk;
  });
  child.stderr?.on('data', (chunk) => {
    output += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(cwd, { recursive: true, force: true });
  };

  for (let attempt = 0; attempt < 150; attempt++) {
    if (child.exitCode !== null) break;
    try {
      const health = await fetch(`${url}/healthz`);
      await health.body?.cancel();
      if (health.ok) return { url, output: () => output, stop };
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  await stop();
  throw new Error(`the second Gatehouse process did not come up:\n${output}`);
}
