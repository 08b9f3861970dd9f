/**
 * The one configuration type and its defaults. Key names, meanings and defaults
 * match HarmonyLite's so an existing config file works unchanged; keys that are
 * ours are marked "(ours)". `config.example.toml` mirrors `defaultConfig()`
 * exactly (test/config/example-config.test.ts keeps the two in sync).
 */

import { MIGRATION_TABLES } from './migration-tables.ts';

export const SNAPSHOT_STORES = ['nats', 's3', 'webdav', 'sftp', 'local'] as const;
export type SnapshotStoreKind = (typeof SNAPSHOT_STORES)[number];

export const LOG_FORMATS = ['console', 'json'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface ReplicationLogConfig {
  shards: number;
  max_entries: number;
  replicas: number;
  compress: boolean;
  update_existing: boolean;
  /** (ours) Max changes in one NATS message. */
  max_batch_changes: number;
  /** (ours) Max encoded bytes of one NATS message before compression; 0 = half the server's max_payload. */
  max_batch_bytes: number;
  /** (ours) JetStream duplicate window, ms (Nats-Msg-Id deduplication). */
  duplicate_window: number;
  /**
   * (ours) Glob patterns of tables routed to one shard by table name alone instead of by
   * key, so all of a table's changes travel in order on one stream. Optional: convergence
   * does not depend on it (versions decide). Must be the same on every node.
   */
  shard_by_table: string[];
  /**
   * (ours) Old-generation heap limit of each shard worker, MB; 0 = V8's default. A message
   * whose decoding kills a worker twice is dead-lettered.
   */
  worker_heap_mb: number;
  /**
   * (ours) Apply a batch only when its origin node's signature verifies (keys in the
   * `<stream_prefix>-node-keys` bucket); others are dead-lettered. Every node signs.
   */
  verify_origins: boolean;
  /**
   * (ours) `"<node id>:<base64 Ed25519 public key>"` entries: when not empty, batches
   * verify only against these keys (no trust on first use through the key bucket).
   */
  trusted_keys: string[];
  /**
   * (ours) Longest time a message may hold its shard waiting for this node's schema
   * before it is dead-lettered by itself, ms; 0 = hold until the schema catches up.
   */
  max_hold: number;
}

export interface NatsConfig {
  urls: string[];
  subject_prefix: string;
  stream_prefix: string;
  server_config: string;
  seed_file: string;
  /** (ours) A .creds file (JWT + NKey seed). */
  creds_file: string;
  user_name: string;
  user_password: string;
  /** (ours) Token authentication. */
  token: string;
  ca_file: string;
  cert_file: string;
  key_file: string;
  bind_address: string;
  /** (ours) TLS certificate of the embedded server's routes (-cluster-addr); "" = no route TLS. */
  route_cert_file: string;
  /** (ours) Its private key (set together with route_cert_file). */
  route_key_file: string;
  /** (ours) CA that every route's certificate must be signed by (mutual TLS); "" = system CAs, no client certificate required. */
  route_ca_file: string;
  connect_retries: number;
  reconnect_wait_seconds: number;
  /** (ours) Where the embedded server keeps its JetStream store; "" = next to the database. */
  store_dir: string;
  /** (ours) Path of the nats-server binary for the embedded server. */
  server_binary: string;
  /** (ours) Timeout of one publish acknowledgement, ms. */
  publish_timeout: number;
  /** (ours) max_payload of the embedded server, bytes; 0 = nats-server's default (1 MiB). */
  max_payload: number;
}

export interface SnapshotNatsConfig {
  replicas: number;
  bucket: string;
}

export interface SnapshotS3Config {
  endpoint: string;
  path: string;
  bucket: string;
  access_key: string;
  secret: string;
  session_token: string;
  use_ssl: boolean;
  region: string;
  force_path_style: boolean;
}

export interface SnapshotConfig {
  enabled: boolean;
  interval: number;
  /**
   * Lifetime of the snapshot leader's lease, ms: a leader that stops renewing is
   * replaced this long after its last renewal. Used when the lease bucket is
   * created; an existing bucket keeps its lifetime.
   */
  leader_ttl: number;
  store: SnapshotStoreKind;
  /** (ours) How many snapshots to keep in the store. */
  keep: number;
  /** (ours) Directory for temporary snapshot files; "" = next to the database. */
  temp_dir: string;
  /** (ours) zstd-compress uploaded snapshots. */
  compress: boolean;
  /**
   * (ours) File holding the 256-bit key that encrypts snapshots at rest (chunked
   * AES-256-GCM, see src/snapshot/snapshot-cipher.ts); "" = not encrypted.
   */
  encryption_key_file: string;
  nats: SnapshotNatsConfig;
  s3: SnapshotS3Config;
  webdav: { url: string };
  sftp: {
    url: string;
    known_hosts: string;
    host_fingerprint: string;
    private_key: string;
    insecure_ignore_host_key: boolean;
  };
  /** (ours) The local-directory store. */
  local: { path: string };
}

export interface LoggingConfig {
  verbose: boolean;
  format: LogFormat;
}

export interface PrometheusConfig {
  enable: boolean;
  bind: string;
  namespace: string;
  subsystem: string;
}

export interface HealthCheckConfig {
  enable: boolean;
  bind: string;
  path: string;
  detailed: boolean;
}

export interface Config {
  db_path: string;
  /** 0 = a random id generated at the first start and stored in the database (src/node/node-id.ts). */
  node_id: number;
  /** Accepted for compatibility; ours keeps stream positions inside the database. */
  seq_map_path: string;
  publish: boolean;
  replicate: boolean;
  scan_max_changes: number;
  cleanup_interval: number;
  sleep_timeout: number;
  polling_interval: number;
  /** (ours) Glob patterns of tables to capture and apply; empty = all. */
  include_tables: string[];
  /** (ours) Glob patterns of tables never captured nor applied. */
  exclude_tables: string[];
  /**
   * (ours) Glob patterns of migration tools' bookkeeping tables, never captured nor
   * applied (each node runs its own migrations); [] replicates them.
   */
  migration_tables: string[];
  /** (ours) SQLite busy timeout of the daemon's connections, ms. */
  busy_timeout: number;
  /** (ours) Checkpoint the WAL when it grows past this many bytes. */
  wal_checkpoint_bytes: number;
  /** (ours) How often a shard held by a schema lag re-checks, and a failed replicated migration is retried, ms. */
  schema_retry_interval: number;
  /** (ours) A received version further ahead of this node's clock is applied, logged and counted, ms. */
  max_clock_skew: number;
  /** (ours) How long the conflict log keeps a losing version, ms. */
  conflict_log_retention: number;
  /** (ours) Most rows the conflict log keeps (the oldest go first). */
  conflict_log_max_rows: number;
  replication_log: ReplicationLogConfig;
  nats: NatsConfig;
  snapshot: SnapshotConfig;
  logging: LoggingConfig;
  prometheus: PrometheusConfig;
  health_check: HealthCheckConfig;
  /** (ours) Periodic verify in the daemon; interval in ms, 0 = off. */
  verify: { interval: number };
}

export function defaultConfig(): Config {
  return {
    db_path: '',
    node_id: 0,
    seq_map_path: '',
    publish: true,
    replicate: true,
    scan_max_changes: 512,
    cleanup_interval: 5000,
    sleep_timeout: 0,
    polling_interval: 0,
    include_tables: [],
    exclude_tables: [],
    migration_tables: [...MIGRATION_TABLES],
    busy_timeout: 5000,
    wal_checkpoint_bytes: 64 * 1024 * 1024,
    schema_retry_interval: 5000,
    max_clock_skew: 60000,
    conflict_log_retention: 7 * 24 * 3600 * 1000,
    conflict_log_max_rows: 100000,
    replication_log: {
      shards: 1,
      max_entries: 1024,
      replicas: 1,
      compress: true,
      update_existing: false,
      max_batch_changes: 1000,
      max_batch_bytes: 0,
      duplicate_window: 120000,
      shard_by_table: [],
      worker_heap_mb: 0,
      verify_origins: true,
      trusted_keys: [],
      max_hold: 0,
    },
    nats: {
      urls: [],
      subject_prefix: 'harmonylite-change-log',
      stream_prefix: 'harmonylite-changes',
      server_config: '',
      seed_file: '',
      creds_file: '',
      user_name: '',
      user_password: '',
      token: '',
      ca_file: '',
      cert_file: '',
      key_file: '',
      bind_address: '',
      route_cert_file: '',
      route_key_file: '',
      route_ca_file: '',
      connect_retries: 5,
      reconnect_wait_seconds: 2,
      store_dir: '',
      server_binary: 'nats-server',
      publish_timeout: 5000,
      max_payload: 0,
    },
    snapshot: {
      enabled: true,
      interval: 0,
      leader_ttl: 30000,
      store: 'nats',
      keep: 3,
      temp_dir: '',
      compress: true,
      encryption_key_file: '',
      nats: { replicas: 1, bucket: '' },
      s3: {
        endpoint: '',
        path: '',
        bucket: '',
        access_key: '',
        secret: '',
        session_token: '',
        use_ssl: true,
        region: 'us-east-1',
        force_path_style: true,
      },
      webdav: { url: '' },
      sftp: {
        url: '',
        known_hosts: '',
        host_fingerprint: '',
        private_key: '',
        insecure_ignore_host_key: false,
      },
      local: { path: '' },
    },
    logging: { verbose: false, format: 'console' },
    prometheus: { enable: false, bind: '127.0.0.1:3010', namespace: 'harmonylite', subsystem: '' },
    health_check: { enable: false, bind: '127.0.0.1:8090', path: '/health', detailed: true },
    verify: { interval: 0 },
  };
}
