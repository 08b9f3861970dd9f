import { Client, type ConnectConfig, type SFTPWrapper } from 'ssh2';

/** One SSH connection with its SFTP channel. */
export interface SftpSession {
  readonly client: Client;
  readonly sftp: SFTPWrapper;
  /**
   * Rejects once the connection is gone. ssh2 fails the requests in flight
   * when a connection drops, but a request issued afterwards is buffered and
   * never answered: every call races against this.
   */
  readonly closed: Promise<never>;
}

/** Why the store itself refused to connect (untrusted host key, unreadable key file); never retried. */
export class SftpConnectRefusal extends Error {
  override readonly name = 'SftpConnectRefusal';
  constructor(
    readonly storeCode: 'ERR_SNAPSHOT_STORE_HOST_KEY' | 'ERR_SNAPSHOT_STORE_CONFIG',
    message: string,
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
  }
}

/**
 * Connects and opens the SFTP channel. `trustHostKey` runs during the key
 * exchange, before any credential is sent; its refusal becomes the rejection.
 */
export function openSftpSession(
  config: ConnectConfig,
  trustHostKey: (key: Buffer) => SftpConnectRefusal | undefined,
): Promise<SftpSession> {
  let refusal: SftpConnectRefusal | undefined;
  const verifying: ConnectConfig = {
    ...config,
    hostVerifier: (key: Buffer) => {
      refusal = trustHostKey(key);
      return refusal === undefined;
    },
  };
  return new Promise<SftpSession>((resolve, reject) => {
    const client = new Client();
    let markClosed: (err: Error) => void = () => {};
    const closed = new Promise<never>((_resolve, rejectClosed) => (markClosed = rejectClosed));
    closed.catch(() => {}); // observed through sftpCall races and the store's reconnect
    let ready = false;
    client.on('ready', () => {
      ready = true;
      client.sftp((err, sftp) => {
        if (err) {
          client.end();
          reject(err);
        } else {
          resolve({ client, sftp, closed });
        }
      });
    });
    client.on('error', (err) => {
      if (!ready) reject(refusal ?? err); // later errors surface through the calls in flight
    });
    client.on('close', () => {
      const err = refusal ?? new Error('connection closed');
      reject(err);
      markClosed(err);
    });
    try {
      client.connect(verifying);
    } catch (err) {
      reject(err); // e.g. an unparsable private key
    }
  });
}

/** Promise form of an ssh2 SFTP callback method that fails fast on a closed session. */
export function sftpCall<T>(
  session: SftpSession,
  start: (sftp: SFTPWrapper, cb: (err: Error | undefined | null, value: T) => void) => void,
): Promise<T> {
  return Promise.race([
    new Promise<T>((resolve, reject) =>
      start(session.sftp, (err, value) => (err ? reject(err) : resolve(value))),
    ),
    session.closed,
  ]);
}
