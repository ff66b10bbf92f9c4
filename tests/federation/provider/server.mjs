// A real third-party OpenID Connect provider for the federation tests: npm `oidc-provider` (certified by
// the OpenID Foundation), installed by scripts/oidc-provider-setup into .cache/oidc-provider/.
//
//   node tests/federation/provider/server.mjs PORT      (PORT 0: any free port)
//
// Environment:
//   OIDC_CLIENT_ID           the one registered client (default "bastion")
//   OIDC_CLIENT_SECRET       its secret: client_secret_basic; empty or unset: a public client ("none")
//   OIDC_REDIRECT_URIS       space-separated redirect URIs (required)
//   OIDC_ID_TOKEN_ALG        ES256 (default), RS256 or EdDSA: the client's id_token_signed_response_alg
//   OIDC_CLAIMS_IN_ID_TOKEN  "1": profile claims in the ID token too; otherwise (the OIDC Core §5.4 default
//                            for the code flow) only from the UserInfo endpoint
//   OIDC_PROVIDER_DIR        where the package is installed (default <repo>/.cache/oidc-provider)
//   OIDC_REGISTRATION        "1": open dynamic client registration (RFC 7591) besides the one client
//
// Prints `READY http://127.0.0.1:PORT` on stdout once listening; that URL is the issuer.
//
// Plain http on loopback: oidc-provider accepts an http issuer as is. It only marks its cookies `Secure`
// when the request is secure (`ctx.secure`), so over http the browser-side cookies still work, and nothing
// else needs configuring; no TLS certificate is involved. The signing keys are generated at every start,
// so every run has keys no other run trusts.
//
// Logging in: the built-in development interactions (`features.devInteractions`, on by default) serve a
// login form that accepts any login name and password; the login name selects the account below, then a
// consent form follows. Subjects are pairwise (opaque, per client), so a test can tell `sub` from the
// username. PKCE is required for every client, S256 only.

import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const packageDir = process.env.OIDC_PROVIDER_DIR || resolve(here, '..', '..', '..', '.cache', 'oidc-provider');

function fail(message) {
  console.error(`oidc-provider server: ${message}`);
  process.exit(2);
}

let Provider;
try {
  // The package lives outside this file's tree, so it is resolved from its install directory.
  const entry = createRequire(join(packageDir, 'package.json')).resolve('oidc-provider');
  ({ default: Provider } = await import(pathToFileURL(entry).href));
} catch (error) {
  fail(`cannot load oidc-provider from ${packageDir} (run scripts/oidc-provider-setup): ${error.message}`);
}

const port = Number.parseInt(process.argv[2] ?? '', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail('usage: server.mjs PORT');
const redirectUris = (process.env.OIDC_REDIRECT_URIS ?? '').split(/\s+/).filter(Boolean);
if (redirectUris.length === 0) fail('OIDC_REDIRECT_URIS is required');
const clientId = process.env.OIDC_CLIENT_ID || 'bastion';
const clientSecret = process.env.OIDC_CLIENT_SECRET || '';
const idTokenAlg = process.env.OIDC_ID_TOKEN_ALG || 'ES256';
if (!['ES256', 'RS256', 'EdDSA'].includes(idTokenAlg)) fail(`OIDC_ID_TOKEN_ALG ${idTokenAlg} is not supported`);

const ACCOUNTS = {
  alice: { preferred_username: 'alice', name: 'Alice Analyst', email: 'alice@example.com', groups: ['analysts'] },
  bob: { preferred_username: 'bob', name: 'Bob Admin', email: 'bob@example.org', groups: ['admins'] },
};

async function findAccount(_ctx, id) {
  const account = ACCOUNTS[id];
  if (!account) return undefined;
  return {
    accountId: id,
    // oidc-provider filters these by the granted scopes and replaces `sub` with the pairwise value.
    async claims() {
      return { sub: id, email_verified: true, ...account };
    },
  };
}

function signingKey(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  return { ...jwk, alg, use: 'sig', kid: `${alg.toLowerCase()}-${randomBytes(6).toString('hex')}` };
}

const pairwiseSalt = randomBytes(16).toString('hex');

const configuration = {
  clients: [
    {
      client_id: clientId,
      ...(clientSecret
        ? { client_secret: clientSecret, token_endpoint_auth_method: 'client_secret_basic' }
        : { token_endpoint_auth_method: 'none' }),
      redirect_uris: redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: idTokenAlg,
      subject_type: 'pairwise',
    },
  ],
  jwks: {
    keys: [
      signingKey('ec', { namedCurve: 'P-256' }, 'ES256'),
      signingKey('rsa', { modulusLength: 2048 }, 'RS256'),
      signingKey('ed25519', {}, 'EdDSA'),
    ],
  },
  findAccount,
  claims: {
    openid: ['sub'],
    profile: ['preferred_username', 'name'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  conformIdTokenClaims: process.env.OIDC_CLAIMS_IN_ID_TOKEN !== '1',
  subjectTypes: ['public', 'pairwise'],
  pairwiseIdentifier: async (_ctx, accountId, client) =>
    createHash('sha256').update(`${client.sectorIdentifier}|${accountId}|${pairwiseSalt}`).digest('hex'),
  pkce: { required: () => true },
  // OIDC_REGISTRATION=1: open dynamic client registration (RFC 7591), for the gateway as an OAuth client.
  features: { registration: { enabled: process.env.OIDC_REGISTRATION === '1' } },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  clientBasedCORS: () => false,
  ttl: {
    AccessToken: 300,
    AuthorizationCode: 60,
    IdToken: 300,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
};

const server = createServer();
server.listen(port, '127.0.0.1', () => {
  // The issuer is only known once the port is: the provider is built after listening (no port race).
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, configuration);
  provider.on('server_error', (_ctx, error) => console.error('oidc-provider server_error:', error));
  server.on('request', provider.callback());
  console.log(`READY ${issuer}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  // Keep-alive connections would hold `server.close()` open: nothing here needs a graceful shutdown.
  process.on(signal, () => process.exit(0));
}
