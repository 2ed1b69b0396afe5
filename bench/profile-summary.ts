/**
 * `node bench/profile-summary.ts <dir>/<bench>-<n>req.cpuprofile [rows]`: where a target's time went in
 * one profiled run (`BENCH_CPU_PROF=<dir>`), per request. Each sample counts for the nearest frame,
 * leaf upwards, in a package or a `src/` file: Node internals, native code and better-sqlite3 (a
 * socket write, a SQLite statement, an fsync) count for whoever called them, so `src/db/commits.ts
 * flush` is the group commit. Idle time is left out; a thread blocked in a synchronous system call
 * (COMMIT under synchronous=FULL) is sampled as busy.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const [file, rows = '30'] = process.argv.slice(2);
if (!file) throw new Error('usage: node bench/profile-summary.ts <file.cpuprofile> [rows]');
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const requests = Number(/-(\d+)req\.cpuprofile$/.exec(file)?.[1] ?? 1);

const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
const parents = new Map<number, number>();
for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
const selfMicros = new Map<number, number>();
for (const [index, id] of profile.samples.entries()) selfMicros.set(id, (selfMicros.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0));

/** `zod`, `@modelcontextprotocol/sdk: server/streamableHttp.js`, `src/mcp/proxy.ts handle`, or undefined for Node's own code. */
function ownerOf({ url, functionName }: ProfileNode['callFrame']): string | undefined {
  const dependency = /node_modules\/((?:@[^/]+\/)?[^/]+)\/(.*)$/.exec(url);
  if (dependency?.[1] === 'better-sqlite3') return undefined;
  if (dependency) return dependency[1] === '@modelcontextprotocol/sdk' ? `${dependency[1]}: ${dependency[2]}` : dependency[1];
  if (url.includes('/src/')) return `src/${url.split('/src/')[1]} ${functionName || '(anonymous)'}`;
  return undefined;
}

const special: Record<string, string> = { '(garbage collector)': '(garbage collection)', '(program)': '(V8, unattributed)' };
const totals = new Map<string, number>();
let busy = 0;
for (const [id, micros] of selfMicros) {
  const leaf = nodes.get(id);
  if (!leaf || leaf.callFrame.functionName === '(idle)') continue;
  busy += micros;
  let owner = special[leaf.callFrame.functionName];
  for (let at: number | undefined = id; !owner && at !== undefined; at = parents.get(at)) {
    const node = nodes.get(at);
    owner = node && ownerOf(node.callFrame);
  }
  owner ??= `node: ${leaf.callFrame.url || leaf.callFrame.functionName}`;
  totals.set(owner, (totals.get(owner) ?? 0) + micros);
}

process.stdout.write(
  `${file}: ${(busy / 1000).toFixed(0)} ms busy, ${requests} requests, ${(busy / requests).toFixed(0)} µs per request\n`,
);
for (const [owner, micros] of [...totals].sort((a, b) => b[1] - a[1]).slice(0, Number(rows))) {
  process.stdout.write(`${((micros / busy) * 100).toFixed(1).padStart(5)}%  ${(micros / requests).toFixed(0).padStart(5)} µs  ${owner}\n`);
}
