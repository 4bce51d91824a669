//! A seeded xorshift generator for the tests that draw thousands of cases
//! and compare each with an oracle: the same cases on every run, no crate.

/// Marsaglia's xorshift64 from a fixed, non-zero seed.
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Xorshift {
        Xorshift(seed)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x % n
    }
}
