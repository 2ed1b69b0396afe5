import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Storage } from '../../src/db/index.ts';
import { createToolRateLimiter } from '../../src/mcp/tool-limits.ts';

const dirs: string[] = [];
const opened: Storage[] = [];
function databasePath(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-limits-'));
  dirs.push(dir);
  return join(dir, 'gatehouse.db');
}
function open(path: string): Storage {
  const storage = openDatabase(path);
  opened.push(storage);
  return storage;
}

afterEach(() => {
  for (const storage of opened.splice(0)) if (storage.sqlite.open) storage.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A limiter on its own database with a clock the test moves (epoch ms). */
function limiterAt(limits: { perAccount: number; perClient: number }, path = databasePath()) {
  const storage = open(path);
  const clock = { now: 1_800_000_000_000 };
  const limiter = createToolRateLimiter(storage.sqlite, storage.commits, limits, () => clock.now);
  return { storage, clock, limiter, path };
}

const takeMany = (take: () => { allowed: boolean }, count: number): boolean[] => Array.from({ length: count }, () => take().allowed);

describe('tool-call rate limits (GCRA in memory, persisted in SQLite)', () => {
  it('allows a burst of the per-minute limit, then refuses with the seconds until the next call passes', () => {
    const { limiter } = limiterAt({ perAccount: 3, perClient: 100 });
    expect(takeMany(() => limiter.takeToolCall('ada', 'client-1'), 3)).toEqual([true, true, true]);
    expect(limiter.takeToolCall('ada', 'client-1')).toEqual({ allowed: false, limit: 'account', perMinute: 3, retryAfter: 20 });
  });

  it('refills one call per 60/limit seconds, never more than the burst', () => {
    const { limiter, clock } = limiterAt({ perAccount: 3, perClient: 100 });
    takeMany(() => limiter.takeToolCall('ada', 'c'), 3);
    clock.now += 19_999;
    expect(limiter.takeToolCall('ada', 'c')).toMatchObject({ allowed: false, retryAfter: 1 });
    clock.now += 1;
    expect(takeMany(() => limiter.takeToolCall('ada', 'c'), 2)).toEqual([true, false]);
    // Idle for ten minutes: the whole burst is back, and only the burst.
    clock.now += 600_000;
    expect(takeMany(() => limiter.takeToolCall('ada', 'c'), 4)).toEqual([true, true, true, false]);
  });

  it('does not let a burst at a minute boundary double the rate, as a fixed window would', () => {
    const { limiter, clock } = limiterAt({ perAccount: 10, perClient: 100 });
    clock.now = Math.ceil(clock.now / 60_000) * 60_000 - 100; // 0.1 s before a minute turns
    expect(takeMany(() => limiter.takeToolCall('ada', 'c'), 10).every(Boolean)).toBe(true);
    clock.now += 200; // 0.1 s after it
    expect(limiter.takeToolCall('ada', 'c')).toMatchObject({ allowed: false, retryAfter: 6 });
  });

  it('rounds Retry-After up to whole seconds for a limit that does not divide a minute', () => {
    const { limiter } = limiterAt({ perAccount: 7, perClient: 100 });
    expect(takeMany(() => limiter.takeToolCall('ada', 'c'), 8)).toEqual([...Array(7).fill(true), false]);
    expect(limiter.takeToolCall('ada', 'c')).toMatchObject({ retryAfter: 9 }); // 60/7 = 8.57 s
  });

  it('counts a client across all its users, and a call one limit refuses spends nothing of the other', () => {
    const { limiter, storage } = limiterAt({ perAccount: 2, perClient: 3 });
    expect(takeMany(() => limiter.takeToolCall('ada', 'shared'), 2)).toEqual([true, true]);
    expect(limiter.takeToolCall('grace', 'shared')).toEqual({ allowed: true });
    expect(limiter.takeToolCall('grace', 'shared')).toEqual({ allowed: false, limit: 'client', perMinute: 3, retryAfter: 20 });
    // Grace's refused call was undone on her account: she still has one call with another client.
    expect(limiter.takeToolCall('grace', 'other')).toEqual({ allowed: true });
    expect(limiter.takeToolCall('grace', 'other')).toMatchObject({ allowed: false, limit: 'account' });
    // Ada's refusal by her account limit spent nothing of the other client's budget.
    const fullAt = () => {
      limiter.sync();
      return storage.sqlite.prepare("SELECT full_at FROM tool_rate_limits WHERE kind = 'client' AND key = 'other'").pluck().get();
    };
    const before = fullAt();
    expect(before).toBeGreaterThan(0);
    expect(limiter.takeToolCall('ada', 'other')).toMatchObject({ allowed: false, limit: 'account' });
    expect(fullAt()).toBe(before);
  });

  it('survives closing and reopening the database file (a restart does not reset the limits)', async () => {
    const first = limiterAt({ perAccount: 2, perClient: 100 });
    takeMany(() => first.limiter.takeToolCall('ada', 'c'), 2);
    first.limiter.close(); // the app closes it before the database
    first.storage.close();
    const second = limiterAt({ perAccount: 2, perClient: 100 }, first.path);
    expect(second.limiter.takeToolCall('ada', 'c')).toMatchObject({ allowed: false, limit: 'account', retryAfter: 30 });
    expect(second.limiter.takeToolCall('grace', 'c')).toEqual({ allowed: true });
  });

  it('writes exactly what it decided when nobody else shares the file', () => {
    const { limiter, storage, clock } = limiterAt({ perAccount: 60, perClient: 60 });
    limiter.takeToolCall('ada', 'c');
    clock.now += 500;
    limiter.takeToolCall('ada', 'c');
    limiter.sync();
    const row = () => storage.sqlite.prepare("SELECT full_at FROM tool_rate_limits WHERE kind = 'account' AND key = 'ada'").pluck().get();
    // GCRA: the first call at t moves "full again" to t + 1 s, the second (at t + 0.5 s) to t + 2 s.
    expect(row()).toBe((clock.now - 500 + 2000) * 1000);
    clock.now += 10_000;
    limiter.takeToolCall('ada', 'c');
    limiter.sync();
    expect(row()).toBe((clock.now + 1000) * 1000);
  });

  it('adds the calls of two connections to one file once each has written (another process sharing it)', async () => {
    const a = limiterAt({ perAccount: 5, perClient: 100 });
    const b = limiterAt({ perAccount: 5, perClient: 100 }, a.path);
    const take = (side: typeof a, count: number) => takeMany(() => side.limiter.takeToolCall('ada', 'c'), count);
    const write = async (side: typeof a) => {
      side.limiter.sync();
      // Two processes would wait for each other's write lock; one thread must let the batch commit.
      await side.storage.commits.durable();
    };
    expect(take(a, 3)).toEqual([true, true, true]);
    await write(a);
    // b reads the key when it first sees it: two calls of the five are left.
    expect(take(b, 3)).toEqual([true, true, false]);
    await write(b);
    // a has not seen b's calls: it allows one more (5 + 1 over both), and its next write adds that to
    // b's row and takes the sum, after which neither allows more.
    expect(take(a, 1)).toEqual([true]);
    await write(a);
    expect(take(a, 1)).toEqual([false]);
    expect(take(b, 1)).toEqual([false]);
  });

  it('shares one limit between two processes racing on one file, exceeding it by at most what one write interval lets through', async () => {
    const { path, storage } = limiterAt({ perAccount: 1, perClient: 1 });
    storage.close(); // migrated; the children open it
    const script = `
      import { openDatabase } from ${JSON.stringify(new URL('../../src/db/index.ts', import.meta.url).href)};
      import { createToolRateLimiter } from ${JSON.stringify(new URL('../../src/mcp/tool-limits.ts', import.meta.url).href)};
      const storage = openDatabase(${JSON.stringify(path)});
      const limiter = createToolRateLimiter(storage.sqlite, storage.commits, { perAccount: 20, perClient: 1000 }, () => 1_800_000_000_000);
      // Start together: each says it is ready, then waits for the parent's go.
      process.stdout.write('ready\\n');
      await new Promise((resolve) => process.stdin.once('data', resolve));
      process.stdin.pause();
      let allowed = 0;
      for (let call = 0; call < 30; call++) {
        if (limiter.takeToolCall('ada', 'c').allowed) allowed++;
        await new Promise((resolve) => setTimeout(resolve, 20 + Math.random() * 10));
      }
      limiter.close();
      storage.close();
      console.log(allowed);`;
    const children = [0, 1].map(() => {
      const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] });
      let out = '';
      const ready = new Promise<void>((resolve) =>
        child.stdout.on('data', (chunk) => {
          out += chunk;
          if (out.startsWith('ready\n')) resolve();
        }),
      );
      const allowed = new Promise<number>((resolve, reject) => {
        child.once('error', reject);
        child.once('close', (code) =>
          code === 0 ? resolve(Number(out.slice('ready\n'.length).trim())) : reject(new Error(`exit ${code}`)),
        );
      });
      return { child, ready, allowed };
    });
    await Promise.all(children.map(({ ready }) => ready));
    for (const { child } of children) child.stdin.end('go\n');
    const [first, second] = await Promise.all(children.map(({ allowed }) => allowed));
    // Alone, each would allow 20. Sharing, they allow the 20 plus what each let through before it saw
    // the other's latest write (a few calls, at one call per 20–30 ms and a write every SYNC_MS).
    const total = (first as number) + (second as number);
    expect(total).toBeGreaterThanOrEqual(20);
    expect(total).toBeLessThan(40);
    expect(first).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(0);
  });

  it('purges only the rows of keys whose budget is full again', () => {
    const { limiter, clock, storage } = limiterAt({ perAccount: 60, perClient: 60 });
    limiter.takeToolCall('idle', 'c');
    clock.now += 1_000;
    limiter.takeToolCall('busy', 'c');
    clock.now += 500; // one call takes 1 s to refill: idle's budget is full again, busy's and the client's not yet
    expect(limiter.purgeIdle()).toBe(1);
    const keys = storage.sqlite.prepare('SELECT kind, key FROM tool_rate_limits ORDER BY kind, key').all();
    expect(keys).toEqual([
      { kind: 'account', key: 'busy' },
      { kind: 'client', key: 'c' },
    ]);
  });
});
