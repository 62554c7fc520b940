//! Deriving independent seeds: every random stream of the crate (one per synthetic image, per
//! loaded item, per augmented sample) is seeded from the user's seed through this mixer, so results
//! do not depend on thread count or order.

/// splitmix64's finaliser: a bijective, well-mixed `u64 -> u64`.
///
/// ```
/// assert_ne!(covid_cxr::seed::splitmix64(1), covid_cxr::seed::splitmix64(2));
/// assert_eq!(covid_cxr::seed::splitmix64(7), covid_cxr::seed::splitmix64(7));
/// ```
pub fn splitmix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for stream `(a, b)` under `seed`: `splitmix64(seed ^ a * ka ^ b * kb)` with odd
/// multipliers `ka`, `kb`.
pub fn mix(seed: u64, a: u64, ka: u64, b: u64, kb: u64) -> u64 {
    splitmix64(seed ^ a.wrapping_mul(ka) ^ b.wrapping_mul(kb))
}
