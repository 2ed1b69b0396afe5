import type { Config } from '../config.ts';
import { createDemoProvider, type DemoProvider } from './demo.ts';
import { createEntraProvider } from './entra.ts';
import { createGoogleProvider } from './google.ts';
import { createOwnerRezProvider } from './ownerrez.ts';
import type { UpstreamProvider } from './types.ts';

/**
 * The identity providers this deployment offers, in the order the consent page lists them. A provider
 * is enabled exactly when its client id is set (DESIGN.md §2); the demo only when DEMO_LOGIN is on.
 */
export function createUpstreams(config: Config): { upstreams: ReadonlyMap<string, UpstreamProvider>; demo: DemoProvider | undefined } {
  const { entra, google, ownerrez } = config.upstreams;
  const enabled: UpstreamProvider[] = [];
  if (entra) enabled.push(createEntraProvider(entra));
  if (google) enabled.push(createGoogleProvider(google));
  if (ownerrez) enabled.push(createOwnerRezProvider(ownerrez));
  const demo = config.demoLogin ? createDemoProvider(config.publicUrl) : undefined;
  if (demo) enabled.push(demo);
  return { upstreams: new Map(enabled.map((provider) => [provider.id, provider])), demo };
}
