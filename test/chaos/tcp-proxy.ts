/**
 * A loopback TCP proxy the chaos suite can cut: `cut()` drops every connection
 * and refuses new ones (a network partition of whatever sits behind it),
 * `heal()` lets connections through again.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export class TcpProxy {
  readonly #target: { host: string; port: number };
  #server: Server | undefined;
  #sockets = new Set<Socket>();
  #cut = false;
  port = 0;

  constructor(targetPort: number, targetHost = '127.0.0.1') {
    this.#target = { host: targetHost, port: targetPort };
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get isCut(): boolean {
    return this.#cut;
  }

  async open(port = 0): Promise<void> {
    this.#server = createServer((client) => {
      if (this.#cut) {
        client.destroy();
        return;
      }
      const upstream = connect(this.#target.port, this.#target.host);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('close', () => this.#sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      this.#server!.once('error', reject);
      this.#server!.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.#server.address() as { port: number }).port;
  }

  cut(): void {
    this.#cut = true;
    for (const s of this.#sockets) s.destroy();
    this.#sockets.clear();
  }

  heal(): void {
    this.#cut = false;
  }

  async close(): Promise<void> {
    this.cut();
    await new Promise<void>((r) => (this.#server ? this.#server.close(() => r()) : r()));
  }
}
