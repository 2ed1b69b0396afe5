import { type Config, ConfigError } from '../config.ts';
import { createDemoProvider, type DemoProvider } from './demo.ts';
import type { UpstreamProvider } from './types.ts';

/** Providers whose configuration is parsed (the contract) but whose login module is not built yet. */
const NOT_YET_AVAILABLE = [
  ['entra', 'ENTRA_CLIENT_ID', 'Microsoft Entra ID'],
  ['google', 'GOOGLE_CLIENT_ID', 'Google'],
  ['ownerrez', 'OWNERREZ_CLIENT_ID', 'OwnerRez'],
] as const;

/**
 * The identity providers this deployment offers, in the order the consent page lists them. A provider
 * that is configured but not available refuses to start, rather than serving a consent page with no
 * way to sign in.
 */
export function createUpstreams(config: Config): { upstreams: ReadonlyMap<string, UpstreamProvider>; demo: DemoProvider | undefined } {
  for (const [key, variable, label] of NOT_YET_AVAILABLE) {
    if (config.upstreams[key])
      throw new ConfigError(variable, `${label} sign-in is not available in this version of Gatehouse yet; unset ${variable}`);
  }
  const upstreams = new Map<string, UpstreamProvider>();
  const demo = config.demoLogin ? createDemoProvider(config.publicUrl) : undefined;
  if (demo) upstreams.set(demo.id, demo);
  return { upstreams, demo };
}
