import type { Config } from '../config.ts';
import { createDemoProvider, type DemoProvider } from './demo.ts';
import type { UpstreamProvider } from './types.ts';

/** The identity providers this deployment offers, in the order the consent page lists them. */
export function createUpstreams(config: Config): { upstreams: ReadonlyMap<string, UpstreamProvider>; demo: DemoProvider | undefined } {
  const upstreams = new Map<string, UpstreamProvider>();
  const demo = config.demoLogin ? createDemoProvider(config.publicUrl) : undefined;
  if (demo) upstreams.set(demo.id, demo);
  return { upstreams, demo };
}
