// Starts unleash-server for development and tests: loopback only, no telemetry, tokens from the environment.
import { start } from 'unleash-server';

await start({
  db: { url: process.env.DATABASE_URL, ssl: false },
  server: { host: '127.0.0.1', port: Number(process.env.UNLEASH_PORT || 4242) },
  sendTelemetry: false,
  versionCheck: { enable: false },
  authentication: {
    initApiTokens: [],
  },
  logLevel: process.env.UNLEASH_LOG_LEVEL || 'warn',
});
