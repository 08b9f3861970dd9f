/**
 * NATS authentication and TLS against a real nats-server, one
 * server per mode: user/password, token, NKey seed, a `.creds` file
 * (decentralized JWT auth: operator, accounts and user generated here), TLS
 * with a private CA, and mutual TLS. In each mode two nodes connect and
 * replicate a write; wrong credentials fail in under 5 s with an error that
 * names the problem (no retry loop); and the secret (password, token, seed,
 * private key) never appears in logs (debug level included), errors, status
 * or metrics. Then the embedded server is given the same auth through
 * `[nats] server_config`, and starts and serves the node.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuthorizationError, connect } from '@nats-io/transport-node';
import { defaultConfig, type Config, type NatsConfig } from '../../src/config/config.ts';
import { silentLogger } from '../../src/logger.ts';
import { EmbeddedNatsServer, type NatsProbeOptions } from '../../src/nats/embedded-server.ts';
import { probeOptions, urlCredentials } from '../../src/nats/nats-connection.ts';
import { startNode, type TestNode } from '../helpers/node-harness.ts';
import { tempDir } from '../helpers/temp-dir.ts';
import { generateTls, jwtSetup, nkeyUser, secret, type TlsFiles } from './nats-credentials.ts';
import {
  assertNoSecret,
  assertReplicates,
  exposedText,
  failingNode,
  SCHEMA,
  startPair,
  startSecureServer,
} from './secure-nodes.ts';

/** Wrong credentials must fail well within this (the default retries would take 10+ s). */
const FAIL_FAST_MS = 5_000;

const dir = tempDir('hl-nats-auth-');
let tls: TlsFiles;

before(() => {
  mkdirSync(join(dir.path, 'tls'));
  tls = generateTls(join(dir.path, 'tls'));
});

after(() => dir.remove());

interface WrongCredentials {
  readonly name: string;
  readonly nats: (n: NatsConfig) => void;
  readonly code: 'ERR_NATS_AUTH' | 'ERR_NATS_TLS';
  readonly message: RegExp;
}

interface AuthMode {
  readonly name: string;
  /** Generated once per mode, when its tests start. */
  setup(modeDir: string): {
    server: string;
    probe: NatsProbeOptions;
    nats: (n: NatsConfig) => void;
    wrong: WrongCredentials[];
    secrets: Record<string, string>;
  };
}

const tlsBlock = () =>
  `tls { cert_file: ${JSON.stringify(tls.serverCert)}, key_file: ${JSON.stringify(tls.serverKey)} }`;
/** The private key's base64 body: what must never be printed. */
const keyBody = (path: string) =>
  readFileSync(path, 'utf8')
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('-----'))
    .join('');

const MODES: AuthMode[] = [
  {
    name: 'user and password',
    setup: () => {
      const password = secret('pw');
      return {
        server: `authorization { user: "harmonylite-node", password: ${JSON.stringify(password)} }`,
        probe: { user: 'harmonylite-node', pass: password },
        nats: (n) => {
          n.user_name = 'harmonylite-node';
          n.user_password = password;
        },
        wrong: [
          {
            name: 'a wrong password',
            nats: (n) => {
              n.user_name = 'harmonylite-node';
              n.user_password = `${password}x`;
            },
            code: 'ERR_NATS_AUTH',
            message: /refused the credentials.*Authorization Violation/,
          },
          {
            name: 'no credentials',
            nats: () => undefined,
            code: 'ERR_NATS_AUTH',
            message: /Authorization Violation/,
          },
        ],
        secrets: { password },
      };
    },
  },
  {
    name: 'token',
    setup: () => {
      const token = secret('token');
      return {
        server: `authorization { token: ${JSON.stringify(token)} }`,
        probe: { token },
        nats: (n) => {
          n.token = token;
        },
        wrong: [
          {
            name: 'a wrong token',
            nats: (n) => {
              n.token = secret('token');
            },
            code: 'ERR_NATS_AUTH',
            message: /refused the credentials/,
          },
        ],
        secrets: { token },
      };
    },
  },
  {
    name: 'NKey seed',
    setup: (modeDir) => {
      const user = nkeyUser();
      const other = nkeyUser();
      const seedFile = join(modeDir, 'node.nk');
      const otherFile = join(modeDir, 'other.nk');
      writeFileSync(seedFile, `${user.seed}\n`, { mode: 0o600 });
      writeFileSync(otherFile, `${other.seed}\n`, { mode: 0o600 });
      return {
        server: `authorization { users: [ { nkey: ${JSON.stringify(user.publicKey)} } ] }`,
        probe: probeOptions({ ...defaultNats(), seed_file: seedFile }),
        nats: (n) => {
          n.seed_file = seedFile;
        },
        wrong: [
          {
            name: 'the seed of an unknown user',
            nats: (n) => {
              n.seed_file = otherFile;
            },
            code: 'ERR_NATS_AUTH',
            message: /refused the credentials/,
          },
        ],
        secrets: { seed: user.seed, 'other seed': other.seed },
      };
    },
  },
  {
    name: '.creds file (JWT)',
    setup: (modeDir) => {
      const jwt = jwtSetup();
      const credsFile = join(modeDir, 'node.creds');
      const untrustedFile = join(modeDir, 'untrusted.creds');
      writeFileSync(credsFile, jwt.creds, { mode: 0o600 });
      writeFileSync(untrustedFile, jwt.untrustedCreds, { mode: 0o600 });
      return {
        server: jwt.serverConfig,
        probe: probeOptions({ ...defaultNats(), creds_file: credsFile }),
        nats: (n) => {
          n.creds_file = credsFile;
        },
        wrong: [
          {
            name: 'a user of an account the server does not trust',
            nats: (n) => {
              n.creds_file = untrustedFile;
            },
            code: 'ERR_NATS_AUTH',
            message: /refused the credentials/,
          },
        ],
        secrets: { 'user seed': jwt.userSeed },
      };
    },
  },
  {
    name: 'TLS with a private CA',
    setup: () => ({
      server: tlsBlock(),
      probe: { tls: { caFile: tls.caFile } },
      nats: (n) => {
        n.ca_file = tls.caFile;
      },
      wrong: [
        {
          name: 'a CA that did not sign the server certificate',
          nats: (n) => {
            n.ca_file = tls.rogueCaFile;
          },
          code: 'ERR_NATS_TLS',
          message: /TLS failed: unable to verify/,
        },
      ],
      secrets: {},
    }),
  },
  {
    name: 'mutual TLS',
    setup: () => ({
      server: `tls { cert_file: ${JSON.stringify(tls.serverCert)}, key_file: ${JSON.stringify(tls.serverKey)}, ca_file: ${JSON.stringify(tls.caFile)}, verify: true }`,
      probe: { tls: { caFile: tls.caFile, certFile: tls.clientCert, keyFile: tls.clientKey } },
      nats: (n) => {
        n.ca_file = tls.caFile;
        n.cert_file = tls.clientCert;
        n.key_file = tls.clientKey;
      },
      wrong: [
        {
          name: 'no client certificate',
          nats: (n) => {
            n.ca_file = tls.caFile;
          },
          code: 'ERR_NATS_TLS',
          message: /refused this client's certificate.*set \[nats\] cert_file/,
        },
        {
          name: 'a client certificate of another CA',
          nats: (n) => {
            n.ca_file = tls.caFile;
            n.cert_file = tls.rogueClientCert;
            n.key_file = tls.rogueClientKey;
          },
          code: 'ERR_NATS_TLS',
          message: /refused this client's certificate/,
        },
      ],
      secrets: { 'client key': keyBody(tls.clientKey), 'rogue client key': keyBody(tls.rogueClientKey) },
    }),
  },
];

const defaultNats = (): NatsConfig => defaultConfig().nats;

let nextNodeId = 10;

for (const mode of MODES) {
  describe(mode.name, () => {
    const modeDir = join(dir.path, mode.name.replace(/\W+/g, '-'));
    let server: EmbeddedNatsServer | undefined;
    let setup: ReturnType<AuthMode['setup']>;
    const nodes: TestNode[] = [];

    before(async () => {
      mkdirSync(modeDir, { recursive: true });
      setup = mode.setup(modeDir);
      server = await startSecureServer(join(modeDir, 'server'), setup.server, setup.probe);
    });

    after(async () => {
      await Promise.all(nodes.map((n) => n.close()));
      await server?.close();
    });

    it('two nodes connect and replicate a write; the secret stays out of logs, status and metrics', async () => {
      const configure = (c: Config) => setup.nats(c.nats);
      const pairDir = join(modeDir, 'pair');
      mkdirSync(pairDir);
      nodes.push(...(await startPair(pairDir, [server!.clientUrl], configure)));
      const [a, b] = nodes as [TestNode, TestNode];
      await assertReplicates(a, b, 1);
      await assertReplicates(b, a, 2);
      for (const n of [a, b]) {
        assertNoSecret(
          await exposedText(n),
          setup.secrets,
          `node ${n.config.node_id}'s logs, status or metrics`,
        );
      }
    });

    it('wrong credentials fail fast with an error that names the problem', async () => {
      for (const wrong of setup.wrong) {
        const failDir = join(modeDir, `fail-${nextNodeId}`);
        mkdirSync(failDir);
        const f = await failingNode(failDir, nextNodeId++, [server!.clientUrl], (c) => {
          c.nats.connect_retries = 5;
          wrong.nats(c.nats);
        });
        assert.equal(f.error.code, wrong.code, `${wrong.name}: ${f.error.message}`);
        assert.match(f.error.message, wrong.message, wrong.name);
        assert.ok(f.ms < FAIL_FAST_MS, `${wrong.name}: failed after ${f.ms} ms`);
        assert.ok(!f.logs.has('NATS connect failed, retrying'), `${wrong.name}: retried`);
        assertNoSecret(
          await exposedText(undefined, f.error, f.logs),
          setup.secrets,
          `the error or logs (${wrong.name})`,
        );
      }
    });
  });
}

describe('credentials in server URLs', () => {
  const password = secret('url-pw');
  let server: EmbeddedNatsServer | undefined;
  const nodes: TestNode[] = [];
  const modeDir = join(dir.path, 'url');

  before(async () => {
    mkdirSync(modeDir, { recursive: true });
    server = await startSecureServer(
      join(modeDir, 'server'),
      `authorization { user: "harmonylite-node", password: ${JSON.stringify(password)} }`,
      { user: 'harmonylite-node', pass: password },
    );
  });

  after(async () => {
    await Promise.all(nodes.map((n) => n.close()));
    await server?.close();
  });

  it('urlCredentials takes user info out of server URLs', () => {
    assert.deepEqual(urlCredentials([`nats://u:${password}@h:1`, 'h:2']), {
      servers: ['nats://h:1', 'h:2'],
      user: 'u',
      pass: password,
    });
    assert.deepEqual(urlCredentials(['tls://t%40k@h:1']), { servers: ['tls://h:1'], token: 't@k' });
    assert.deepEqual(urlCredentials(['nats://h:1']), { servers: ['nats://h:1'] });
  });

  it('a wrong password in the URL fails fast and is not printed', async () => {
    const url = `nats://harmonylite-node:${password}x@127.0.0.1:${server!.port}`;
    const failDir = join(modeDir, 'fail');
    mkdirSync(failDir);
    const f = await failingNode(failDir, 30, [url], () => undefined);
    assert.equal(f.error.code, 'ERR_NATS_AUTH', f.error.message);
    assert.ok(f.ms < FAIL_FAST_MS, `failed after ${f.ms} ms`);
    assertNoSecret(
      await exposedText(undefined, f.error, f.logs),
      { password: `${password}x` },
      'the error or logs',
    );
  });

  it('nodes replicate with user:password@ in [nats] urls (as with HarmonyLite)', async () => {
    const url = `nats://harmonylite-node:${encodeURIComponent(password)}@127.0.0.1:${server!.port}`;
    const pairDir = join(modeDir, 'pair');
    mkdirSync(pairDir);
    nodes.push(...(await startPair(pairDir, [url], () => undefined)));
    const [a, b] = nodes as [TestNode, TestNode];
    await assertReplicates(a, b, 1);
  });

  it('the password of a URL stays out of logs, status and metrics', async () => {
    assert.equal(nodes.length, 2, 'the nodes of the previous test');
    for (const n of nodes)
      assertNoSecret(await exposedText(n), { password }, `node ${n.config.node_id}'s output`);
  });
});

describe('the embedded server with the same auth ([nats] server_config)', () => {
  const modeDir = join(dir.path, 'embedded');

  before(() => mkdirSync(modeDir, { recursive: true }));

  /** A node on the embedded default (no [nats] urls) whose server config requires credentials. */
  async function embeddedNode(
    name: string,
    serverConfig: string,
    nats: (n: NatsConfig) => void,
  ): Promise<{ node: TestNode; close: () => Promise<void> }> {
    const nodeDir = join(modeDir, name);
    mkdirSync(nodeDir);
    const confFile = join(nodeDir, 'nats-server.conf');
    writeFileSync(confFile, `${serverConfig}\n`, { mode: 0o600 });
    const node = await startNode({
      dir: nodeDir,
      nodeId: 40 + nextNodeId++,
      urls: [],
      schema: SCHEMA,
      verbose: true,
      configure: (c) => {
        c.nats.server_config = confFile;
        c.snapshot.enabled = false;
        nats(c.nats);
      },
    });
    return { node, close: () => node.close() };
  }

  /** The embedded server refuses a client without credentials: its auth is on. */
  async function refusesAnonymous(url: string, tlsOptions?: NatsProbeOptions['tls']): Promise<void> {
    await assert.rejects(
      connect({ servers: url, reconnect: false, timeout: 3000, ...(tlsOptions ? { tls: tlsOptions } : {}) }),
      (err: unknown) => err instanceof AuthorizationError,
    );
  }

  it('user and password', async () => {
    const password = secret('embedded-pw');
    const { node, close } = await embeddedNode(
      'user-password',
      `authorization { user: "harmonylite-node", password: ${JSON.stringify(password)} }`,
      (n) => {
        n.user_name = 'harmonylite-node';
        n.user_password = password;
      },
    );
    try {
      assert.equal(node.node.status().natsConnected, true);
      await refusesAnonymous(node.node.embeddedServer!.clientUrl);
      assertNoSecret(await exposedText(node), { password }, 'the embedded node');
    } finally {
      await close();
    }
  });

  it('NKey seed', async () => {
    const user = nkeyUser();
    const seedFile = join(modeDir, 'embedded.nk');
    writeFileSync(seedFile, user.seed, { mode: 0o600 });
    const { node, close } = await embeddedNode(
      'nkey',
      `authorization { users: [ { nkey: ${JSON.stringify(user.publicKey)} } ] }`,
      (n) => {
        n.seed_file = seedFile;
      },
    );
    try {
      assert.equal(node.node.status().natsConnected, true);
      await refusesAnonymous(node.node.embeddedServer!.clientUrl);
      assertNoSecret(await exposedText(node), { seed: user.seed }, 'the embedded node');
    } finally {
      await close();
    }
  });

  it('a .creds file (JWT)', async () => {
    const jwt = jwtSetup();
    const credsFile = join(modeDir, 'embedded.creds');
    writeFileSync(credsFile, jwt.creds, { mode: 0o600 });
    const { node, close } = await embeddedNode('creds', jwt.serverConfig, (n) => {
      n.creds_file = credsFile;
    });
    try {
      assert.equal(node.node.status().natsConnected, true);
      await refusesAnonymous(node.node.embeddedServer!.clientUrl);
    } finally {
      await close();
    }
  });

  it('mutual TLS, when the readiness probe uses the node settings (probeOptions)', async () => {
    // What HarmonyLiteNode does: the readiness probe authenticates with probeOptions(config.nats).
    const nats: NatsConfig = {
      ...defaultNats(),
      ca_file: tls.caFile,
      cert_file: tls.clientCert,
      key_file: tls.clientKey,
    };
    const server = new EmbeddedNatsServer({
      storeDir: join(modeDir, 'mtls-server'),
      serverName: 'embedded-mtls',
      logger: silentLogger(),
      extraConfig: `tls { cert_file: ${JSON.stringify(tls.serverCert)}, key_file: ${JSON.stringify(tls.serverKey)}, ca_file: ${JSON.stringify(tls.caFile)}, verify: true }`,
      probe: probeOptions(nats),
    });
    try {
      await server.open();
      assert.equal(server.running, true);
    } finally {
      await server.close();
    }
  });

  it('mutual TLS through [nats] server_config', async () => {
    const { node, close } = await embeddedNode(
      'mtls',
      `tls { cert_file: ${JSON.stringify(tls.serverCert)}, key_file: ${JSON.stringify(tls.serverKey)}, ca_file: ${JSON.stringify(tls.caFile)}, verify: true }`,
      (n) => {
        n.ca_file = tls.caFile;
        n.cert_file = tls.clientCert;
        n.key_file = tls.clientKey;
      },
    );
    try {
      assert.equal(node.node.status().natsConnected, true);
    } finally {
      await close();
    }
  });
});
