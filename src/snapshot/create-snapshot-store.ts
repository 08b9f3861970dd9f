import type { NatsConnection } from '@nats-io/transport-node';
import type { Config } from '../config/config.ts';
import { ConfigError } from '../config/config-error.ts';
import { snapshotBucket } from '../nats/naming.ts';
import type { SnapshotStore } from './snapshot-store.ts';
import { LocalSnapshotStore } from './stores/local-store.ts';
import { NatsObjectSnapshotStore } from './stores/nats-object-store.ts';
import { S3SnapshotStore } from './stores/s3-store.ts';
import { SftpSnapshotStore } from './stores/sftp-store.ts';
import { WebDavSnapshotStore } from './stores/webdav-store.ts';

/** `key` when the config value is set, else nothing (exactOptionalPropertyTypes: absent, not undefined). */
function opt<K extends string, V>(key: K, value: V, unset: V): { [P in K]?: V } {
  return (value === unset ? {} : { [key]: value }) as { [P in K]?: V };
}

function required(value: string, key: string, kind: string): string {
  if (value === '') {
    throw new ConfigError(`config key "snapshot.${key}" is required when snapshot.store = "${kind}"`, {
      hint: `set [snapshot.${key.split('.')[0]}] ${key.split('.')[1]} in the config file, or choose another snapshot.store`,
    });
  }
  return value;
}

/**
 * The configured snapshot store (`[snapshot] store`), not yet opened. The
 * NATS object store needs the node's connection `nc`; the other backends
 * connect on `open()`. Missing required keys throw a `ConfigError`.
 */
export function createSnapshotStore(
  config: Config,
  deps: { nc?: NatsConnection | undefined } = {},
): SnapshotStore {
  const s = config.snapshot;
  switch (s.store) {
    case 'nats': {
      if (deps.nc === undefined) throw new Error('the nats snapshot store needs a NATS connection');
      return new NatsObjectSnapshotStore({
        nc: deps.nc,
        bucket: snapshotBucket(config.nats.stream_prefix, s.nats.bucket),
        replicas: s.nats.replicas,
      });
    }
    case 'local':
      return new LocalSnapshotStore({ path: required(s.local.path, 'local.path', 'local') });
    case 's3':
      return new S3SnapshotStore({
        bucket: required(s.s3.bucket, 's3.bucket', 's3'),
        ...opt('endpoint', s.s3.endpoint, ''),
        ...opt('path', s.s3.path, ''),
        ...opt('accessKey', s.s3.access_key, ''),
        ...opt('secret', s.s3.secret, ''),
        ...opt('sessionToken', s.s3.session_token, ''),
        useSsl: s.s3.use_ssl,
        ...opt('region', s.s3.region, ''),
        forcePathStyle: s.s3.force_path_style,
      });
    case 'webdav':
      return new WebDavSnapshotStore({ url: required(s.webdav.url, 'webdav.url', 'webdav') });
    case 'sftp':
      return new SftpSnapshotStore({
        url: required(s.sftp.url, 'sftp.url', 'sftp'),
        ...opt('knownHostsPath', s.sftp.known_hosts, ''),
        ...opt('hostFingerprint', s.sftp.host_fingerprint, ''),
        ...opt('privateKeyPath', s.sftp.private_key, ''),
        insecureIgnoreHostKey: s.sftp.insecure_ignore_host_key,
      });
  }
  throw new ConfigError(`unknown snapshot.store ${JSON.stringify(s.store)}`);
}
