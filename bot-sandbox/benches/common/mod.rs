//! What the sandbox's benchmarks share: percentiles and their printing.

/// The value at `p` (0..=1) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Prints p50 and p99 of `values` (milliseconds) under `name`; the p50.
pub fn stats(name: &str, mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let p50 = percentile(&values, 0.5);
    println!("{name:<32} p50 {p50:>7.2} ms   p99 {:>7.2} ms", percentile(&values, 0.99));
    p50
}
