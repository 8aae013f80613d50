// Percentiles (nearest rank on the sorted samples) and formatting.
export function summarize(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.round((sorted.length - 1) * q)))];
  const mid = sorted.length >> 1;
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
  return { n: sorted.length, median, p90: at(0.9), p99: at(0.99), min: sorted[0], max: sorted.at(-1),
    mean: sorted.reduce((s, x) => s + x, 0) / sorted.length };
}

export const ms = (x, digits = 3) => x.toFixed(digits);
