import { readFileSync } from 'node:fs';

/** Clock ticks per second in /proc/stat (USER_HZ, 100 on every mainstream Linux build). */
const USER_HZ = 100;

/**
 * CPU time all processes on the machine have used so far, in microseconds (Linux; undefined elsewhere).
 * Minus the target's and this process's own time, it tells whether something else competed for the cores.
 */
export function machineBusyMicros(): number | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    return ((user + nice + system + irq + softirq + steal) * 1e6) / USER_HZ;
  } catch {
    return undefined;
  }
}

export function ownCpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}
