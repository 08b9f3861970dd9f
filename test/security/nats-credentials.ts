/**
 * Credentials for the NATS security tests, generated at test time (nothing
 * secret is committed): TLS certificates with `openssl`, NKeys with the NATS
 * client's nkeys module, and decentralized-auth JWTs (operator, accounts,
 * user, `.creds` file) signed here with those NKeys. `@nats-io/jwt` and `nsc`
 * are not installed; a NATS JWT is only base64url(header).base64url(claims).
 * base64url(ed25519 signature of the first two), which nats-server 2.9 checks.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { nkeys } from '@nats-io/transport-node';

type KeyPair = ReturnType<typeof nkeys.createUser>;

/** A random secret that is easy to search for in logs. */
export function secret(label: string): string {
  return `${label}-${randomBytes(12).toString('hex')}`;
}

// ------------------------------------------------------------------ TLS

export interface TlsFiles {
  readonly caFile: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** A CA nobody trusts, and a client certificate it signed. */
  readonly rogueCaFile: string;
  readonly rogueClientCert: string;
  readonly rogueClientKey: string;
}

function openssl(dir: string, ...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** A CA key and self-signed certificate: `<name>.key`, `<name>.pem`. */
function makeCa(dir: string, name: string): void {
  openssl(
    dir,
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.pem`,
  );
}

/** A key and a certificate signed by CA `caName`: `<name>.key`, `<name>.pem`. */
function makeLeaf(dir: string, caName: string, name: string, ext: string): void {
  openssl(
    dir,
    'req',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
  );
  writeFileSync(join(dir, `${name}.ext`), ext);
  openssl(
    dir,
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${caName}.pem`,
    '-CAkey',
    `${caName}.key`,
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.pem`,
  );
}

/** A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and a rogue CA's client certificate. */
export function generateTls(dir: string): TlsFiles {
  makeCa(dir, 'ca');
  makeCa(dir, 'rogue-ca');
  makeLeaf(
    dir,
    'ca',
    'server',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n',
  );
  makeLeaf(dir, 'ca', 'client', 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n');
  makeLeaf(dir, 'rogue-ca', 'rogue-client', 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature\n');
  const f = (name: string) => join(dir, name);
  return {
    caFile: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    clientCert: f('client.pem'),
    clientKey: f('client.key'),
    rogueCaFile: f('rogue-ca.pem'),
    rogueClientCert: f('rogue-client.pem'),
    rogueClientKey: f('rogue-client.key'),
  };
}

/**
 * A CA and one certificate for every member of a route cluster (127.0.0.1, usable as
 * server and client: a route is solicited by either side).
 */
export function generateRouteTls(dir: string): { caFile: string; certFile: string; keyFile: string } {
  makeCa(dir, 'route-ca');
  makeLeaf(
    dir,
    'route-ca',
    'route',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n',
  );
  chmodSync(join(dir, 'route.key'), 0o600);
  return {
    caFile: join(dir, 'route-ca.pem'),
    certFile: join(dir, 'route.pem'),
    keyFile: join(dir, 'route.key'),
  };
}

// ------------------------------------------------------------------ NKeys

export interface NkeyUser {
  readonly publicKey: string;
  /** The seed ("SU..."): the secret. */
  readonly seed: string;
}

export function nkeyUser(): NkeyUser {
  const kp = nkeys.createUser();
  return { publicKey: kp.getPublicKey(), seed: new TextDecoder().decode(kp.getSeed()) };
}

// ------------------------------------------------------------------ JWT (decentralized auth)

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32 without padding (the `jti` encoding of NATS JWTs). */
function base32(bytes: Uint8Array): string {
  let bits = 0;
  let value = 0;
  let out = '';
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

const b64url = (s: string | Uint8Array): string => Buffer.from(s).toString('base64url');

/** A NATS v2 JWT with `claims`, issued (signed) by `issuer`. */
export function signJwt(issuer: KeyPair, claims: Record<string, unknown>): string {
  const body: Record<string, unknown> = {
    jti: '',
    iat: Math.floor(Date.now() / 1000),
    iss: issuer.getPublicKey(),
    ...claims,
  };
  body.jti = base32(createHash('sha512-256').update(JSON.stringify(body)).digest());
  const signing = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'ed25519-nkey' }))}.${b64url(JSON.stringify(body))}`;
  return `${signing}.${b64url(issuer.sign(new TextEncoder().encode(signing)))}`;
}

const UNLIMITED = {
  subs: -1,
  data: -1,
  payload: -1,
  imports: -1,
  exports: -1,
  wildcards: true,
  conn: -1,
  leaf: -1,
};
const JETSTREAM = { mem_storage: -1, disk_storage: -1, streams: -1, consumer: -1 };

export interface JwtSetup {
  /** nats-server config: operator, system account, memory resolver with both accounts preloaded. */
  readonly serverConfig: string;
  /** A `.creds` file's text for a user of the application account. */
  readonly creds: string;
  /** The user's seed inside `creds` (the secret). */
  readonly userSeed: string;
  /** A `.creds` file of a user signed by an account the server does not know. */
  readonly untrustedCreds: string;
}

function credsFile(userJwt: string, seed: string): string {
  return [
    '-----BEGIN NATS USER JWT-----',
    userJwt,
    '------END NATS USER JWT------',
    '',
    '************************* IMPORTANT *************************',
    'NKEY Seed printed below can be used to sign and prove identity.',
    'NKEYs are sensitive and should be treated as secrets.',
    '',
    '-----BEGIN USER NKEY SEED-----',
    seed,
    '------END USER NKEY SEED------',
    '',
  ].join('\n');
}

function userCreds(account: KeyPair): { creds: string; seed: string } {
  const user = nkeys.createUser();
  const jwt = signJwt(account, {
    name: 'harmonylite-node',
    sub: user.getPublicKey(),
    nats: { type: 'user', version: 2, pub: {}, sub: {}, subs: -1, data: -1, payload: -1 },
  });
  const seed = new TextDecoder().decode(user.getSeed());
  return { creds: credsFile(jwt, seed), seed };
}

/** An operator, a system account, an application account with JetStream, and a user of it. */
export function jwtSetup(): JwtSetup {
  const operator = nkeys.createOperator();
  const system = nkeys.createAccount();
  const app = nkeys.createAccount();
  const operatorJwt = signJwt(operator, {
    name: 'harmonylite-test',
    sub: operator.getPublicKey(),
    nats: { type: 'operator', version: 2, system_account: system.getPublicKey() },
  });
  const account = (kp: KeyPair, name: string, limits: object) =>
    signJwt(operator, { name, sub: kp.getPublicKey(), nats: { type: 'account', version: 2, limits } });
  const user = userCreds(app);
  const untrusted = userCreds(nkeys.createAccount());
  const serverConfig = [
    `operator: ${operatorJwt}`,
    `system_account: ${system.getPublicKey()}`,
    'resolver: MEMORY',
    'resolver_preload: {',
    `  ${system.getPublicKey()}: ${account(system, 'SYS', UNLIMITED)}`,
    `  ${app.getPublicKey()}: ${account(app, 'APP', { ...UNLIMITED, ...JETSTREAM })}`,
    '}',
  ].join('\n');
  return { serverConfig, creds: user.creds, userSeed: user.seed, untrustedCreds: untrusted.creds };
}
