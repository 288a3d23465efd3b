//! Small helpers the benchmark programs share.

/// The number in environment variable `name`, or `default`.
pub fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The value at fraction `p` (0–1) of already sorted `values`.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Runs `f` repeatedly for about `budget` and returns seconds per call;
/// `f` says whether its input passed, which the first call must.
pub fn seconds_per_call(budget: std::time::Duration, mut f: impl FnMut() -> bool) -> f64 {
    assert!(f(), "the benchmark input must pass");
    let start = std::time::Instant::now();
    let mut runs = 0u64;
    while start.elapsed() < budget {
        std::hint::black_box(f());
        runs += 1;
    }
    start.elapsed().as_secs_f64() / runs as f64
}

/// The median (upper middle) of `values`, which it sorts.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
        let sorted = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!((percentile(&sorted, 0.0), percentile(&sorted, 0.5), percentile(&sorted, 0.99)), (1, 6, 10));
    }
}
