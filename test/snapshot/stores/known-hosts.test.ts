import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  checkKnownHosts,
  normalizeFingerprint,
  sshFingerprint,
} from '../../../src/snapshot/stores/known-hosts.ts';
import { generateSshKeyPair } from '../../helpers/protocol-servers.ts';
import { tempDir } from '../../helpers/temp-dir.ts';

const dir = tempDir('hl-known-hosts-');
after(() => dir.remove());
const key = generateSshKeyPair(dir.path, 'host');
const other = generateSshKeyPair(dir.path, 'other');
const [type, blob] = key.publicKey.split(' ') as [string, string];
const [otherType, otherBlob] = other.publicKey.split(' ') as [string, string];
const keyBuffer = Buffer.from(blob, 'base64');

describe('sshFingerprint', () => {
  it('matches what ssh-keygen -lf prints', () => {
    const printed = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', key.publicKeyPath], {
      encoding: 'utf8',
    });
    assert.equal(sshFingerprint(keyBuffer), /SHA256:\S+/.exec(printed)?.[0]);
  });

  it('normalises pasted fingerprints', () => {
    const fp = sshFingerprint(keyBuffer);
    const bare = fp.slice('SHA256:'.length);
    for (const pasted of [fp, bare, `${bare}=`, ` sha256:${bare} `])
      assert.equal(normalizeFingerprint(pasted), fp);
  });
});

describe('checkKnownHosts', () => {
  it('matches plain names for port 22 and [host]:port otherwise', () => {
    assert.equal(
      checkKnownHosts(`backup.example ${type} ${blob}\n`, 'backup.example', 22, keyBuffer),
      'match',
    );
    assert.equal(
      checkKnownHosts(`[backup.example]:2222 ${type} ${blob}\n`, 'backup.example', 2222, keyBuffer),
      'match',
    );
    assert.equal(
      checkKnownHosts(`backup.example ${type} ${blob}\n`, 'backup.example', 2222, keyBuffer),
      'unknown',
    );
    assert.equal(
      checkKnownHosts(`BACKUP.example ${type} ${blob}\n`, 'backup.EXAMPLE', 22, keyBuffer),
      'match',
    );
  });

  it('reports a different key for a known host as a mismatch', () => {
    const content = `# comment\n\nbackup.example ${otherType} ${otherBlob}\n`;
    assert.equal(checkKnownHosts(content, 'backup.example', 22, keyBuffer), 'mismatch');
    assert.equal(checkKnownHosts(content, 'elsewhere.example', 22, keyBuffer), 'unknown');
  });

  it('accepts any of several keys for one host (key rotation)', () => {
    const content = `backup.example ${otherType} ${otherBlob}\nbackup.example ${type} ${blob}\n`;
    assert.equal(checkKnownHosts(content, 'backup.example', 22, keyBuffer), 'match');
  });

  it('understands comma lists, wildcards and negation', () => {
    assert.equal(checkKnownHosts(`a.example,b.example ${type} ${blob}`, 'b.example', 22, keyBuffer), 'match');
    assert.equal(checkKnownHosts(`*.example ${type} ${blob}`, 'b.example', 22, keyBuffer), 'match');
    assert.equal(checkKnownHosts(`?.example ${type} ${blob}`, 'bb.example', 22, keyBuffer), 'unknown');
    assert.equal(
      checkKnownHosts(`*.example,!b.example ${type} ${blob}`, 'b.example', 22, keyBuffer),
      'unknown',
    );
  });

  it('matches names hashed by ssh-keygen -H', () => {
    const path = join(dir.path, 'hashed');
    writeFileSync(path, `[10.0.0.7]:2222 ${type} ${blob}\nbackup.example ${type} ${blob}\n`);
    execFileSync('ssh-keygen', ['-q', '-H', '-f', path], { stdio: 'ignore' });
    const content = readFileSync(path, 'utf8');
    assert.ok(!content.includes('backup.example'));
    assert.equal(checkKnownHosts(content, '10.0.0.7', 2222, keyBuffer), 'match');
    assert.equal(checkKnownHosts(content, 'backup.example', 22, keyBuffer), 'match');
    assert.equal(checkKnownHosts(content, 'backup.example', 2222, keyBuffer), 'unknown');
  });

  it('honours @revoked and ignores @cert-authority', () => {
    assert.equal(
      checkKnownHosts(
        `@revoked * ${type} ${blob}\nbackup.example ${type} ${blob}\n`,
        'backup.example',
        22,
        keyBuffer,
      ),
      'revoked',
    );
    assert.equal(
      checkKnownHosts(`@cert-authority * ${type} ${blob}\n`, 'backup.example', 22, keyBuffer),
      'unknown',
    );
  });
});
