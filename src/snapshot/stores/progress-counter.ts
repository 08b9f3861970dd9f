import { Transform } from 'node:stream';

/**
 * A pass-through stream that reports the cumulative byte count after each
 * chunk, and 0 at the end of an empty stream (so every transfer reports its
 * final size). With no callback it is still a plain pass-through, so callers
 * need no branch.
 */
export function progressCounter(onProgress: ((bytes: number) => void) | undefined): Transform {
  let bytes = 0;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      bytes += chunk.length;
      onProgress?.(bytes);
      callback(null, chunk);
    },
    flush(callback) {
      if (bytes === 0) onProgress?.(0);
      callback();
    },
  });
}
