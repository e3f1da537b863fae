//! Deterministic inputs for parity checks, kernel tests and benchmarks: the same numbers on
//! every backend and platform, so a failure reproduces.

/// `len` values in [-1, 1) from a 64-bit LCG seeded with `seed`.
pub fn sample_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005) ^ 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_reproducible_bounded_and_seeded() {
        let a = sample_values(1000, 7);
        assert_eq!(a, sample_values(1000, 7));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert_ne!(a, sample_values(1000, 8));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.1, "mean {mean} of a uniform [-1, 1) sample");
    }
}
