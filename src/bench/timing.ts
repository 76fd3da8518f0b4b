/**
 * Median wall time (seconds) of `await fn()` followed by sync(), after a warm-up run, over >= minReps
 * runs and >= minTime seconds.
 */
export async function medianTime(fn: () => Promise<unknown>, sync: () => void, minTime = 0.3, minReps = 3, maxReps = 200): Promise<number> {
  await fn();
  sync();
  const times: number[] = [];
  const start = process.hrtime.bigint();
  const elapsed = () => Number(process.hrtime.bigint() - start) / 1e9;
  while ((times.length < minReps || elapsed() < minTime) && times.length < maxReps) {
    const t0 = process.hrtime.bigint();
    await fn();
    sync();
    times.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}
