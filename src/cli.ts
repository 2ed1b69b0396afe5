// The admin command (`npm run gatehouse -- …`). It prints kids and counts only: never keys, plaintext or sealed values.
import { existsSync } from 'node:fs';
import { ConfigError, loadConfig } from './config.ts';
import { openDatabase, type Storage } from './db/index.ts';
import { assertKeyringCovers, countSealedByKid, rewrapSealedRows } from './upstream/key-rotation.ts';
import { createVault, type Vault } from './upstream/vault.ts';

const USAGE = `Usage: npm run gatehouse -- keys <status|rewrap>

  keys status   the primary kid, the configured kids, how many sealed values each kid wraps,
                and which kids can be removed from ENCRYPTION_KEYS now
  keys rewrap   rewrap every sealed value under the primary kid; safe beside a running server,
                and resumable if interrupted

Configuration comes from the environment and ./.env, as for npm start (ENCRYPTION_KEYS, DATABASE_PATH).
Exit status: 0 done, 1 values left under old kids (see the output), 2 usage or configuration error.`;

const plural = (count: number, noun: string): string => `${count} ${noun}${count === 1 ? '' : 's'}`;

function status(counts: Map<string, number>, vault: Vault): number {
  console.log(`primary kid: ${vault.primaryKid}`);
  console.log(`configured kids: ${vault.kids.join(', ')}`);
  console.log('sealed values by kid:');
  for (const kid of new Set([...vault.kids, ...counts.keys()])) {
    const note = vault.kids.includes(kid) ? '' : '  NOT CONFIGURED: the server refuses to start until this key is back';
    console.log(`  ${kid}: ${counts.get(kid) ?? 0}${note}`);
  }
  const removable = vault.kids.filter((kid) => kid !== vault.primaryKid && !counts.get(kid));
  const waiting = vault.kids.filter((kid) => kid !== vault.primaryKid && counts.get(kid));
  console.log(`removable from ENCRYPTION_KEYS now: ${removable.join(', ') || 'none'}`);
  if (waiting.length > 0) console.log(`still in use (run \`npm run gatehouse -- keys rewrap\` first): ${waiting.join(', ')}`);
  return [...counts.keys()].every((kid) => vault.kids.includes(kid)) ? 0 : 2;
}

function rewrap(storage: Storage, vault: Vault): number {
  // Rows under a kid we do not hold cannot be rewrapped: say so before touching anything.
  assertKeyringCovers(storage.sqlite, vault);
  const result = rewrapSealedRows(storage, vault, {
    onProgress: ({ table, rewrapped, failed }) => console.log(`${table}: ${rewrapped} rewrapped, ${failed} failed so far`),
  });
  for (const { table, rowKeyHash, reason } of result.failures)
    console.log(`could not open ${table} row ${rowKeyHash} (${reason}): left in place`);
  const left = [...result.remaining].map(([kid, count]) => `${kid} ${count}`).join(', ');
  console.log(
    `rewrapped ${plural(result.rewrapped, 'value')} under ${vault.primaryKid}; ${result.failed} failed; left under old kids: ${left || 'none'}`,
  );
  if (result.failed > 0) console.log('Values that cannot be opened keep their kid in use: delete those rows to drop it (users reconnect).');
  else if (result.remaining.size > 0)
    console.log(
      'Values were sealed under an old kid during the run: restart every server with the new ENCRYPTION_KEYS, then run this again.',
    );
  return result.failed > 0 || result.remaining.size > 0 ? 1 : 0;
}

function main(args: readonly string[]): number {
  const [group, command, ...rest] = args;
  if (group !== 'keys' || (command !== 'status' && command !== 'rewrap') || rest.length > 0) {
    console.error(USAGE);
    return 2;
  }
  // A `.env` file in the working directory is read if present, as by the server (real env wins).
  if (existsSync('.env')) process.loadEnvFile('.env');
  try {
    // Of config's development notices only the generated-key one concerns keys (it says which key is in use).
    const config = loadConfig(process.env, (message) => {
      if (message.includes('ENCRYPTION_KEY')) console.warn(message);
    });
    // Opening would create an empty database: a wrong DATABASE_PATH must not look like "nothing sealed".
    if (!existsSync(config.databasePath)) throw new ConfigError('DATABASE_PATH', `no database at ${config.databasePath}`);
    const vault = createVault(config.encryptionKeys);
    const storage = openDatabase(config.databasePath);
    try {
      return command === 'status' ? status(countSealedByKid(storage.sqlite), vault) : rewrap(storage, vault);
    } finally {
      storage.close();
    }
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`gatehouse keys ${command}: ${error.message}`);
    return 2;
  }
}

process.exitCode = main(process.argv.slice(2));
