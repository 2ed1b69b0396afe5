import { existsSync } from 'node:fs';
import { buildApp } from './app.ts';
import { ConfigError, loadConfig } from './config.ts';

// A `.env` file in the working directory is read if present (Node's own loader; real env wins).
if (existsSync('.env')) process.loadEnvFile('.env');

/** A configuration problem ends the process with one line naming the variable, not a stack trace. */
async function start() {
  try {
    const config = loadConfig(process.env);
    return { config, app: await buildApp(config) };
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`Gatehouse cannot start: ${error.message}`);
    process.exit(1);
  }
}

const { config, app } = await start();
await app.listen({ port: config.port, host: config.host });
app.log.info(`Gatehouse is serving ${config.resourceUrl} (issuer ${config.publicUrl})`);

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    app.log.info({ signal }, 'shutting down');
    app.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
