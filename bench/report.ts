import type { LoadResult } from './load.ts';

export interface Measurement extends LoadResult {
  name: string;
  /** Share of one core the target process used while under load (≈100% means the server was the bottleneck). */
  serverCpu: number;
  /**
   * Share of the run the target's event loop was busy. Below ≈95% the target was waiting, not working:
   * its rate is bound by how long each request waits (an fsync, an upstream) times the connections.
   */
  loopBusy: number;
  /** Share of one core the fake upstreams the target called used meanwhile (NaN: the target calls none). */
  fakeCpu: number;
  /** Cores used by processes outside the benchmark meanwhile (noise from a shared machine). */
  otherCpu: number;
  /** Requests per second of every round, the best of which is this measurement. */
  rounds: number[];
  /** p50 latency of every round, in the order of `rounds`. */
  roundsP50: number[];
}

/**
 * A ratio target. `throughput`: `measured` req/s over `baseline` req/s must reach `threshold`.
 * `p50`: the latency `measured` adds to `baseline` at the median (p50 over p50, minus one) must stay within `threshold`.
 */
export interface Target {
  name: string;
  /** e.g. "≥ 40% of ceiling" */
  wanted: string;
  measured: Measurement;
  baseline: Measurement;
  /** NaN for a reference row, shown without PASS or MISS. */
  threshold: number;
  unit: '%' | '×';
  metric: 'throughput' | 'p50';
}

const fixed = (value: number, digits: number) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');
const showRatio = (value: number, unit: '%' | '×') => (unit === '%' ? `${fixed(value * 100, 1)}%` : `${fixed(value, 2)}×`);

function table(header: string[], rows: string[][], rightAligned: ReadonlySet<number>): string {
  const widths = header.map((cell, column) => Math.max(cell.length, ...rows.map((row) => row[column]?.length ?? 0)));
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (rightAligned.has(column) ? cell.padStart(widths[column] ?? 0) : cell.padEnd(widths[column] ?? 0)))
      .join('  ');
  return [line(header), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.map(line)].join('\n');
}

/** The throughput table: every measurement against the bare-Fastify ceiling. */
export function formatMeasurements(measurements: readonly Measurement[], ceiling: number): string {
  const rows = measurements.map((m) => [
    m.name,
    fixed(m.requestsPerSecond, 0),
    fixed(m.p50Ms, 2),
    fixed(m.p99Ms, 2),
    showRatio(m.requestsPerSecond / ceiling, '%'),
    `${fixed(m.serverCpu * 100, 0)}%`,
    `${fixed(m.loopBusy * 100, 0)}%`,
    Number.isNaN(m.fakeCpu) ? '' : `${fixed(m.fakeCpu * 100, 0)}%`,
    fixed(m.otherCpu, 2),
    `${fixed(((Math.max(...m.rounds) - Math.min(...m.rounds)) / Math.max(...m.rounds)) * 100, 0)}%`,
    m.failures === 0 ? '0' : `${m.failures} of ${m.responses}`,
  ]);
  return table(
    ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'of ceiling', 'server CPU', 'loop busy', 'fake CPU', 'other CPU', 'spread', 'failures'],
    rows,
    new Set([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
  );
}

/**
 * The targets, each PASS or MISS on the ratio of the best runs. The range is the same ratio within
 * each round (runs a few seconds apart), to show how much of a margin is noise.
 */
export function formatTargets(targets: readonly Target[]): string {
  const rows = targets.map((t) => {
    const per = (measured: Measurement, round?: number): { rps: number; p50: number } =>
      round === undefined
        ? { rps: measured.requestsPerSecond, p50: measured.p50Ms }
        : { rps: measured.rounds[round] ?? Number.NaN, p50: measured.roundsP50[round] ?? Number.NaN };
    // p50: the share of latency the measured path adds to the baseline (0.25 = 25% slower at the median).
    const ratio = (round?: number) => {
      const [m, b] = [per(t.measured, round), per(t.baseline, round)];
      return t.metric === 'p50' ? m.p50 / b.p50 - 1 : m.rps / b.rps;
    };
    const show = (value: number) => (t.metric === 'p50' ? `${value >= 0 ? '+' : ''}${showRatio(value, '%')}` : showRatio(value, t.unit));
    const value = ratio();
    const perRound = t.measured.rounds.map((_, round) => ratio(round));
    const range = `${show(Math.min(...perRound))} – ${show(Math.max(...perRound))}`;
    const pass = t.metric === 'p50' ? value <= t.threshold : value >= t.threshold;
    // p50: also the time added, which does not depend on how fast the baseline (a local fake) is.
    const added = t.metric === 'p50' ? ` (+${fixed(t.measured.p50Ms - t.baseline.p50Ms, 2)} ms)` : '';
    return [t.name, t.wanted, `${show(value)}${added}`, range, Number.isNaN(t.threshold) ? '' : pass ? 'PASS' : 'MISS'];
  });
  return table(['target', 'wanted', 'measured', 'per round', ''], rows, new Set([2, 3]));
}
