import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError } from '../../src/config/config-error.ts';
import { parseArgs, USAGE, type CliArgs } from '../../src/cli/parse-args.ts';

const DEFAULTS: CliArgs = {
  config: 'config.toml',
  cleanup: false,
  force: false,
  saveSnapshot: false,
  version: false,
  help: false,
  status: false,
  schemaStatus: false,
  schemaStatusCluster: false,
  verify: false,
  repair: false,
};

/** Asserts that parsing `argv` fails with a usage error matching `message`, and returns it. */
function usageError(argv: string[], message: RegExp): ConfigError {
  try {
    parseArgs(argv);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.match(err.message, message);
    assert.match(err.hint ?? '', /harmonylite -help|=/, 'every usage error carries a hint');
    return err;
  }
  assert.fail(`expected ${JSON.stringify(argv)} to fail with ${String(message)}`);
}

describe('parseArgs', () => {
  it('defaults: run the node with config.toml, as HarmonyLite does', () => {
    assert.deepEqual(parseArgs([]), DEFAULTS);
  });

  it('omits optional fields that were not given (exactOptionalPropertyTypes)', () => {
    const args = parseArgs([]);
    for (const key of ['nodeId', 'clusterAddr', 'clusterPeers', 'leafServers', 'deadLetterStuck']) {
      assert.ok(!(key in args), `${key} should be absent`);
    }
  });

  describe('accepts Go and GNU style for a value flag', () => {
    for (const argv of [
      ['-config', 'a.toml'],
      ['-config=a.toml'],
      ['--config', 'a.toml'],
      ['--config=a.toml'],
    ]) {
      it(argv.join(' '), () => {
        assert.deepEqual(parseArgs(argv), { ...DEFAULTS, config: 'a.toml' });
      });
    }
  });

  it('keeps "=" inside a value', () => {
    assert.equal(parseArgs(['-config=dir/a=b.toml']).config, 'dir/a=b.toml');
  });

  describe('accepts boolean flags in every style', () => {
    const cases: [argv: string[], cleanup: boolean][] = [
      [['-cleanup'], true],
      [['--cleanup'], true],
      [['-cleanup=true'], true],
      [['--cleanup=true'], true],
      [['-cleanup=false'], false],
      [['--cleanup=false'], false],
      [['-cleanup=1'], true],
      [['-cleanup=0'], false],
      [['-cleanup=T'], true],
      [['-cleanup=FALSE'], false],
    ];
    for (const [argv, cleanup] of cases) {
      it(`${argv.join(' ')} → ${cleanup}`, () => {
        assert.equal(parseArgs(argv).cleanup, cleanup);
      });
    }
  });

  it('parses every flag', () => {
    assert.deepEqual(
      parseArgs([
        '-config',
        '/etc/harmonylite/node1.toml',
        '-node-id=7',
        '--cluster-addr',
        '127.0.0.1:4248',
        '-cluster-peers',
        'nats://10.0.0.2:4248,nats-route://10.0.0.3:4248',
        '--leaf-servers=nats://user:pw@hub:7422, tls://hub2:7422',
      ]),
      {
        ...DEFAULTS,
        config: '/etc/harmonylite/node1.toml',
        nodeId: 7,
        clusterAddr: '127.0.0.1:4248',
        clusterPeers: ['nats://10.0.0.2:4248', 'nats-route://10.0.0.3:4248'],
        leafServers: ['nats://user:pw@hub:7422', 'tls://hub2:7422'],
      },
    );
  });

  it('parses each command flag', () => {
    assert.equal(parseArgs(['-cleanup']).cleanup, true);
    assert.equal(parseArgs(['-save-snapshot']).saveSnapshot, true);
    assert.equal(parseArgs(['--status']).status, true);
    assert.equal(parseArgs(['-schema-status']).schemaStatus, true);
    assert.equal(parseArgs(['--schema-status-cluster']).schemaStatusCluster, true);
    assert.equal(parseArgs(['-dead-letter-stuck', '3']).deadLetterStuck, 3);
    assert.equal(parseArgs(['--dead-letter-stuck=0']).deadLetterStuck, 0);
    assert.equal(parseArgs(['-migrate', 'm/001.sql']).migrate, 'm/001.sql');
    assert.equal(parseArgs(['--migrate-resolved=7']).migrateResolved, 7);
    assert.equal(parseArgs(['-version']).version, true);
    assert.equal(parseArgs(['--version']).version, true);
  });

  it('accepts -help, --help and -h', () => {
    for (const flag of ['-help', '--help', '-h', '--h']) assert.equal(parseArgs([flag]).help, true, flag);
  });

  it('node id 0 means "the id generated and stored in the database", as in the config', () => {
    assert.equal(parseArgs(['-node-id', '0']).nodeId, 0);
  });

  it('accepts IPv6 and wildcard cluster addresses', () => {
    assert.equal(parseArgs(['-cluster-addr', '[::1]:6222']).clusterAddr, '[::1]:6222');
    assert.equal(parseArgs(['-cluster-addr', ':6222']).clusterAddr, ':6222');
  });

  it('-pprof takes the listen address, as HarmonyLite does', () => {
    assert.equal(parseArgs(['-pprof', '127.0.0.1:6060']).pprof, '127.0.0.1:6060');
    assert.equal(parseArgs(['-pprof=:6060']).pprof, ':6060');
  });

  it('keeps the last value of a repeated flag, as Go does', () => {
    assert.equal(parseArgs(['-config', 'a.toml', '--config=b.toml']).config, 'b.toml');
  });

  it('allows a command flag together with -help or -version', () => {
    assert.equal(parseArgs(['-cleanup', '-status', '-help']).help, true);
    assert.equal(parseArgs(['-cleanup', '-schema-status', '-version']).version, true);
  });

  it('accepts a lone "--" at the end', () => {
    assert.deepEqual(parseArgs(['-cleanup', '--']), { ...DEFAULTS, cleanup: true });
  });

  describe('usage errors name the flag and what was expected', () => {
    const cases: [what: string, argv: string[], message: RegExp][] = [
      ['unknown Go-style flag', ['-x'], /^unknown flag "-x"$/],
      ['unknown GNU-style flag', ['--confg=a.toml'], /^unknown flag "--confg"$/],
      ['unknown flag with three dashes', ['---config', 'a'], /^unknown flag "---config"$/],
      ['HarmonyLite has no -v', ['-v'], /^unknown flag "-v"$/],
      ['a prototype member is no flag', ['-constructor'], /^unknown flag "-constructor"$/],
      ['missing value at the end', ['-config'], /^flag "-config" needs a value$/],
      ['missing GNU-style value', ['--config'], /^flag "--config" needs a value$/],
      ['empty inline value', ['-config='], /^flag "-config" needs a value$/],
      ['flag where the value should be', ['-config', '-cleanup'], /^flag "-config" needs a value$/],
      ['GNU flag where the value should be', ['-config', '--cleanup'], /^flag "-config" needs a value$/],
      ['"--" where the value should be', ['-config', '--'], /^flag "-config" needs a value$/],
      [
        'node id not a number',
        ['-node-id', 'abc'],
        /^flag "-node-id" must be an unsigned integer, got "abc"$/,
      ],
      ['negative node id', ['-node-id', '-1'], /^flag "-node-id" must be an unsigned integer, got "-1"$/],
      ['fractional node id', ['-node-id=1.5'], /^flag "-node-id" must be an unsigned integer, got "1\.5"$/],
      ['hex node id', ['-node-id=0x10'], /must be an unsigned integer, got "0x10"$/],
      ['node id beyond 2^53', ['-node-id', '9007199254740993'], /must be an unsigned integer/],
      ['bad shard', ['-dead-letter-stuck', 'two'], /^flag "-dead-letter-stuck" must be an unsigned integer/],
      ['shard missing', ['--dead-letter-stuck'], /^flag "--dead-letter-stuck" needs a value$/],
      ['migration file missing', ['-migrate'], /^flag "-migrate" needs a value$/],
      ['bad migration', ['-migrate-resolved', 'x'], /^flag "-migrate-resolved" must be an unsigned integer/],
      ['bad boolean', ['-cleanup=yes'], /^flag "-cleanup" must be true or false, got "yes"$/],
      ['empty boolean', ['--status='], /^flag "--status" must be true or false, got ""$/],
      [
        'cluster address without port',
        ['-cluster-addr', 'localhost'],
        /"-cluster-addr" must be an address host:port/,
      ],
      [
        'cluster address port too big',
        ['-cluster-addr=h:70000'],
        /"-cluster-addr" must be an address host:port/,
      ],
      ['peer without scheme', ['-cluster-peers', 'h1:4248'], /"-cluster-peers" must be .*nats:\/\/host:port/],
      ['peer with http scheme', ['-cluster-peers', 'http://h1:4248'], /got "http:\/\/h1:4248"$/],
      ['peer without port', ['-cluster-peers', 'nats://h1:4248,nats://h2'], /got "nats:\/\/h2"$/],
      ['empty peer in the list', ['-cluster-peers', 'nats://h1:4248,,nats://h2:4248'], /got ""$/],
      ['leaf server not a URL', ['-leaf-servers', 'hub'], /^flag "-leaf-servers" must be .*, got "hub"$/],
      [
        'stray positional argument',
        ['config.toml'],
        /^unexpected argument "config\.toml": harmonylite takes no/,
      ],
      ['lone dash', ['-'], /^unexpected argument "-"/],
      ['argument after "--"', ['--', 'x'], /^unexpected argument "x"/],
      [
        'two commands',
        ['-cleanup', '--save-snapshot'],
        /^flags "-cleanup" and "--save-snapshot" cannot be combined/,
      ],
      [
        'status and schema status',
        ['-status', '-schema-status'],
        /^flags "-status" and "-schema-status" cannot be combined/,
      ],
      ['-bench is not a flag (npm run bench is the benchmark)', ['-bench'], /^unknown flag "-bench"$/],
      ['pprof without a port', ['-pprof', 'localhost'], /^flag "-pprof" must be an address host:port/],
      [
        'dead letter with cleanup',
        ['-dead-letter-stuck=1', '-cleanup'],
        /"-cleanup" and "-dead-letter-stuck"/,
      ],
    ];
    for (const [what, argv, message] of cases) {
      it(`${what}: ${argv.join(' ')}`, () => {
        usageError(argv, message);
      });
    }
  });

  it('hints at -help for an unknown flag', () => {
    assert.equal(usageError(['-x'], /unknown flag/).hint, 'run harmonylite -help');
  });

  it('hints at "=" when a boolean flag is followed by its value (Go does not take "-cleanup false")', () => {
    const err = usageError(['-cleanup', 'false'], /^unexpected argument "false"/);
    assert.match(err.hint ?? '', /write -cleanup=false/);
  });

  it('throws usage errors as ConfigError, so the CLI exits 2', () => {
    const err = usageError(['-x'], /./);
    assert.equal(err.code, 'ERR_CONFIG');
    assert.equal(err.name, 'ConfigError');
  });
});

const SAMPLES: Record<string, string> = {
  FILE: 'a.toml',
  N: '1',
  SHARD: '1',
  SEQ: '1',
  'HOST:PORT': 'h:1',
  URLS: 'nats://h:1',
};

describe('USAGE', () => {
  it('starts with how to run harmonylite', () => {
    assert.match(USAGE, /^Usage: harmonylite \[flags\]/);
  });

  it('lists every flag on one line of its own', () => {
    const flags = [
      'config',
      'node-id',
      'cleanup',
      'save-snapshot',
      'cluster-addr',
      'cluster-peers',
      'leaf-servers',
      'version',
      'help',
      'status',
      'dead-letter-stuck',
      'schema-status',
      'schema-status-cluster',
      'migrate',
      'migrate-resolved',
      'pprof',
    ];
    const lines = USAGE.split('\n');
    for (const flag of flags) {
      const matching = lines.filter((l) => new RegExp(`^ +-${flag}(?: [A-Z:]+)? {2,}\\S`).test(l));
      assert.equal(matching.length, 1, `one usage line for -${flag}`);
      // Every flag listed is accepted by the parser, with a sample of its placeholder.
      const placeholder = / -[a-z-]+ ([A-Z:]+)/.exec(matching[0] ?? '')?.[1];
      const argv = [`-${flag}`, ...(placeholder === undefined ? [] : [SAMPLES[placeholder] ?? placeholder])];
      assert.doesNotThrow(() => parseArgs(argv), argv.join(' '));
    }
    assert.match(USAGE, /-h\b/, 'mentions -h');
  });

  it('shows both flag styles', () => {
    assert.match(USAGE, /-flag=value/);
    assert.match(USAGE, /--flag value/);
  });
});

describe('-verify', () => {
  it('takes -tables and -repair', () => {
    assert.deepEqual(parseArgs(['-verify', '-tables', 'a*,b', '-repair']), {
      ...DEFAULTS,
      verify: true,
      tables: 'a*,b',
      repair: true,
    });
  });

  it('refuses -tables and -repair without -verify', () => {
    usageError(['-repair'], /flag "-repair" needs -verify/);
    usageError(['-tables', 'x'], /flag "-tables" needs -verify/);
  });
});

describe('-wait-replicated', () => {
  it('takes -nodes and -timeout', () => {
    assert.deepEqual(parseArgs(['-wait-replicated', 'last', '-nodes', 'quorum', '-timeout', '2s']), {
      ...DEFAULTS,
      waitReplicated: 'last',
      nodes: 'quorum',
      timeout: '2s',
    });
  });

  it('refuses -nodes and -timeout without -wait-replicated', () => {
    usageError(['-nodes', 'all'], /flag "-nodes" needs -wait-replicated/);
    usageError(['-timeout', '1s'], /flag "-timeout" needs -wait-replicated/);
  });
});
