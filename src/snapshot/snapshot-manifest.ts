/**
 * What a restoring node reads before it replaces anything (invariant 8): the
 * stream position of every shard the snapshot includes, who made it and when,
 * the schema, the size and checksum of the database file, and where its data
 * object is. Pure: no I/O.
 *
 * Store layout (flat names, see snapshot-store.ts): the data object
 * `snapshot-<createdAt>-<nodeId>.db` (`.db.zst` compressed, `.enc` appended
 * when encrypted) is uploaded first, the
 * manifest `snapshot-<createdAt>-<nodeId>.json` last, so a manifest only ever
 * points to complete data. Data without a manifest is a crashed or running
 * upload and is never restored.
 */
import { SnapshotError } from './snapshot-error.ts';
import { errorMessage } from '../error-message.ts';

/** Format 2 names its checksum's algorithm; format 1 (SHA-256 in `sha256`) is still read. */
export const MANIFEST_FORMAT = 2;

/** How an encrypted data object was encrypted (`snapshot-cipher.ts`); the header of the data says it again. */
export interface SnapshotEncryptionInfo {
  /** Chunked AES-256-GCM with a per-file HKDF-SHA256 key, format version 1. */
  readonly cipher: typeof SNAPSHOT_CIPHER;
  /** Id of the key (`snapshotKeyId`), so a restore with another key says which one it needs. */
  readonly keyId: string;
}

export const SNAPSHOT_CIPHER = 'aes-256-gcm-chunked-v1';

/** Highest batch sequence applied per origin node and shard (the `__harmonylite___origin_seqs` rows). */
export interface OriginSeq {
  readonly origin: number;
  readonly shard: number;
  readonly seq: number;
}

export interface SnapshotManifest {
  readonly format: typeof MANIFEST_FORMAT;
  /** Base name shared by the manifest and data objects: `snapshot-<createdAt>-<nodeId>`. */
  readonly name: string;
  readonly nodeId: number;
  /** When the database was copied, ms since the epoch. */
  readonly createdAt: number;
  /** The streams the positions refer to (`[nats] stream_prefix`), and the saving node's own `shards`. */
  readonly streamPrefix: string;
  readonly shards: number;
  /**
   * Stream sequence applied per shard ("1", "2", …), consistent with the data (one read transaction):
   * every stream the node consumed, which may go beyond its own `shards`.
   */
  readonly positions: Readonly<Record<string, number>>;
  readonly originSeqs: readonly OriginSeq[];
  /**
   * The user schema (`sqlite_schema.sql` of non-internal objects), `;\n`-separated, for operators
   * and checks. Empty when encrypted: the manifest stays readable and a schema can hold secrets.
   */
  readonly schemaSql: string;
  /** Size of the database file, bytes. */
  readonly sizeBytes: number;
  /** Checksum of the database file (after decompression): `xxh64:<16 hex>`, or `sha256:<64 hex>` from format 1. */
  readonly checksum: string;
  readonly compressed: boolean;
  /** Name of the data object in the store. */
  readonly dataObject: string;
  /** Size of the data object as stored (compressed size when `compressed`, with encryption overhead when encrypted), bytes. */
  readonly dataBytes: number;
  /**
   * Set when the data object is encrypted (after compression). Absent on plain snapshots, so
   * their manifests are exactly as before; older builds refuse an encrypted one (its `dataObject`
   * ends in `.enc`), never restore it as garbage.
   */
  readonly encryption?: SnapshotEncryptionInfo;
}

/** Highest shard number a position may name (stream names `<prefix>-<n>`, n of at most 6 digits). */
const MAX_SHARD = 999_999;

const BASE_NAME = /^snapshot-(\d{13})-(\d{1,10})$/;
const OBJECT_NAME = /^(snapshot-\d{13}-\d{1,10})(\.json|\.db|\.db\.zst|\.db\.enc|\.db\.zst\.enc)$/;

/** `snapshot-<createdAt, 13 digits>-<nodeId>`: sorts by time as a string, unique per node and millisecond. */
export function snapshotBaseName(createdAt: number, nodeId: number): string {
  return `snapshot-${String(createdAt).padStart(13, '0')}-${nodeId}`;
}

export function manifestObjectName(baseName: string): string {
  return `${baseName}.json`;
}

export function dataObjectName(baseName: string, compressed: boolean, encrypted = false): string {
  return `${baseName}${compressed ? '.db.zst' : '.db'}${encrypted ? '.enc' : ''}`;
}

/**
 * What an encrypted data object is bound to (the cipher's `context`): its
 * snapshot's name and streams. A data object served under another manifest,
 * or a manifest whose name or streams were changed, fails authentication.
 */
export function encryptionContext(m: Pick<SnapshotManifest, 'name' | 'streamPrefix' | 'shards'>): string {
  return `${m.name}\n${m.streamPrefix}\n${m.shards}`;
}

/** Classifies a store object name of ours; undefined for anything else. */
export function parseSnapshotObjectName(
  objectName: string,
): { baseName: string; createdAt: number; nodeId: number; kind: 'manifest' | 'data' } | undefined {
  const m = OBJECT_NAME.exec(objectName);
  if (m === null) return undefined;
  const baseName = m[1]!;
  const b = BASE_NAME.exec(baseName)!;
  return {
    baseName,
    createdAt: Number(b[1]),
    nodeId: Number(b[2]),
    kind: m[2] === '.json' ? 'manifest' : 'data',
  };
}

/** The manifest's position of `shard`; 0 when the snapshot's node had applied nothing of it. */
export function manifestPosition(manifest: SnapshotManifest, shard: number): number {
  return manifest.positions[String(shard)] ?? 0;
}

export function encodeManifest(manifest: SnapshotManifest): Uint8Array {
  return new TextEncoder().encode(`${JSON.stringify(manifest, null, 2)}\n`);
}

/**
 * Parses and validates a manifest read from object `objectName`. Anything
 * unexpected is rejected with `ERR_SNAPSHOT_MANIFEST` naming the object and the
 * field, so a damaged or foreign manifest is never restored.
 */
export function decodeManifest(bytes: Uint8Array, objectName: string): SnapshotManifest {
  const fail = (detail: string): never => {
    throw new SnapshotError('ERR_SNAPSHOT_MANIFEST', `manifest ${objectName}: ${detail}`, {
      hint: 'delete the object from the snapshot store; the next snapshot replaces it',
    });
  };
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    return fail(`not valid JSON (${errorMessage(err)})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return fail('not a JSON object');
  const o = raw as Record<string, unknown>;
  const int = (key: string, min = 0): number => {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min)
      return fail(`${key} must be an integer >= ${min}, found ${JSON.stringify(v)}`);
    return v;
  };
  const str = (key: string): string => {
    const v = o[key];
    if (typeof v !== 'string') return fail(`${key} must be a string, found ${JSON.stringify(v)}`);
    return v;
  };

  if (o.format !== MANIFEST_FORMAT && o.format !== 1)
    fail(
      `format ${JSON.stringify(o.format)} is not supported (this build reads formats 1 to ${MANIFEST_FORMAT})`,
    );
  const name = str('name');
  if (!BASE_NAME.test(name)) fail(`name ${JSON.stringify(name)} is not snapshot-<createdAt>-<nodeId>`);
  const expected = manifestObjectName(name);
  if (objectName !== expected) fail(`names snapshot ${name}, so it should be stored as ${expected}`);
  const nodeId = int('nodeId', 1);
  const createdAt = int('createdAt', 1);
  if (name !== snapshotBaseName(createdAt, nodeId)) fail(`name ${name} does not match createdAt and nodeId`);
  const streamPrefix = str('streamPrefix');
  const shards = int('shards', 1);

  const positionsRaw = o.positions;
  if (typeof positionsRaw !== 'object' || positionsRaw === null || Array.isArray(positionsRaw))
    fail('positions must be an object of shard -> stream sequence');
  const positions: Record<string, number> = {};
  for (const [shard, seq] of Object.entries(positionsRaw as Record<string, unknown>)) {
    const n = Number(shard);
    // Any stream the node consumed, beyond its own shards too (a rolling change of the count).
    if (!/^\d+$/.test(shard) || n < 1 || n > MAX_SHARD) fail(`positions has shard ${JSON.stringify(shard)}`);
    if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0)
      fail(`positions[${shard}] must be an integer >= 0, found ${JSON.stringify(seq)}`);
    positions[shard] = seq as number;
  }

  if (!Array.isArray(o.originSeqs)) fail('originSeqs must be an array');
  const originSeqs = (o.originSeqs as unknown[]).map((e, i): OriginSeq => {
    const r = e as Record<string, unknown> | null;
    const ok = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    if (typeof r !== 'object' || r === null || !ok(r.origin) || !ok(r.shard) || !ok(r.seq))
      fail(`originSeqs[${i}] must be {origin, shard, seq} of integers`);
    return { origin: r!.origin as number, shard: r!.shard as number, seq: r!.seq as number };
  });

  let checksum: string;
  if (o.format === 1) {
    const sha256 = str('sha256');
    if (!/^[0-9a-f]{64}$/.test(sha256)) fail('sha256 must be 64 lowercase hex digits');
    checksum = `sha256:${sha256}`;
  } else {
    checksum = str('checksum');
    if (!/^(xxh64:[0-9a-f]{16}|sha256:[0-9a-f]{64})$/.test(checksum))
      fail('checksum must be xxh64:<16 hex digits> or sha256:<64 hex digits>');
  }
  if (typeof o.compressed !== 'boolean') fail('compressed must be true or false');
  const compressed = o.compressed as boolean;
  let encryption: SnapshotEncryptionInfo | undefined;
  if (o.encryption !== undefined) {
    const e = o.encryption as Record<string, unknown> | null;
    if (typeof e !== 'object' || e === null || Array.isArray(e)) fail('encryption must be an object');
    if (e!.cipher !== SNAPSHOT_CIPHER)
      fail(
        `encryption.cipher ${JSON.stringify(e!.cipher)} is not supported (this build reads ${SNAPSHOT_CIPHER})`,
      );
    if (typeof e!.keyId !== 'string' || !/^[0-9a-f]{16}$/.test(e!.keyId))
      fail('encryption.keyId must be 16 lowercase hex digits');
    encryption = { cipher: SNAPSHOT_CIPHER, keyId: e!.keyId as string };
  }
  const dataObject = str('dataObject');
  const expectedData = dataObjectName(name, compressed, encryption !== undefined);
  if (dataObject !== expectedData) fail(`dataObject ${JSON.stringify(dataObject)} should be ${expectedData}`);

  return {
    format: MANIFEST_FORMAT,
    name,
    nodeId,
    createdAt,
    streamPrefix,
    shards,
    positions,
    originSeqs,
    schemaSql: str('schemaSql'),
    sizeBytes: int('sizeBytes', 1),
    checksum,
    compressed,
    dataObject,
    dataBytes: int('dataBytes', 1),
    ...(encryption === undefined ? {} : { encryption }),
  };
}
