import type { LoadResult } from './load.ts';

export interface Measurement extends LoadResult {
  name: string;
  /** Share of one core the target process used while under load (≈100% means the server was the bottleneck). */
  serverCpu: number;
  /** Cores used by processes outside the benchmark meanwhile (noise from a shared machine). */
  otherCpu: number;
  /** Requests per second of every round, the best of which is this measurement. */
  rounds: number[];
}

/** A ratio target: `measured` over `baseline` must reach `threshold`. */
export interface Target {
  name: string;
  /** e.g. "≥ 40% of ceiling" */
  wanted: string;
  measured: Measurement;
  baseline: Measurement;
  threshold: number;
  unit: '%' | '×';
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
    fixed(m.otherCpu, 2),
    `${fixed(((Math.max(...m.rounds) - Math.min(...m.rounds)) / Math.max(...m.rounds)) * 100, 0)}%`,
    m.failures === 0 ? '0' : `${m.failures} of ${m.responses}`,
  ]);
  return table(
    ['scenario', 'req/s', 'p50 ms', 'p99 ms', 'of ceiling', 'server CPU', 'other CPU', 'spread', 'failures'],
    rows,
    new Set([1, 2, 3, 4, 5, 6, 7, 8]),
  );
}

/**
 * The targets, each PASS or MISS on the ratio of the best runs. The range is the same ratio within
 * each round (runs a few seconds apart), to show how much of a margin is noise.
 */
export function formatTargets(targets: readonly Target[]): string {
  const rows = targets.map((t) => {
    const value = t.measured.requestsPerSecond / t.baseline.requestsPerSecond;
    const perRound = t.measured.rounds.map((rps, round) => rps / (t.baseline.rounds[round] ?? Number.NaN));
    const range = `${showRatio(Math.min(...perRound), t.unit)} – ${showRatio(Math.max(...perRound), t.unit)}`;
    return [t.name, t.wanted, showRatio(value, t.unit), range, value >= t.threshold ? 'PASS' : 'MISS'];
  });
  return table(['target', 'wanted', 'measured', 'per round', ''], rows, new Set([2, 3]));
}
