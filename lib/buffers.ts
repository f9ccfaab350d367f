/**
 * Freeing large buffers early. File data moves through 1 MiB buffers; this is how the
 * data path keeps its memory flat (docs/PERFORMANCE.md).
 *
 * @module
 */

/** Buffers at least this large are freed at once by {@link releaseBuffer}. */
const RELEASE_THRESHOLD = 64 * 1024;

/**
 * Free a large buffer now instead of at the next garbage collection. File data moves
 * through 1 MiB buffers; left to the collector, ~100 MB of them float per thread
 * (V8 collects external memory late), which is what kept RSS above 150 MB. Detaching
 * the buffer (`transfer(0)`) drops its backing store immediately. Only for buffers
 * nothing else refers to.
 */
export function releaseBuffer(bytes: Uint8Array): void {
  const buffer = bytes.buffer;
  if (buffer instanceof ArrayBuffer && !buffer.detached && buffer.byteLength >= RELEASE_THRESHOLD) {
    buffer.transfer(0);
  }
}
