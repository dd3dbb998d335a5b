//! `analysis::stats` against numpy 2.4.6 / scipy 1.17.1.
//!
//! The expected numbers were produced once with Python and pasted here; the tests do not
//! need Python. Samples come from a 64-bit LCG that both languages evaluate bit for bit:
//!
//! ```python
//! M = (1 << 64) - 1
//! def lcg(seed, n):
//!     s, out = seed & M, []
//!     for _ in range(n):
//!         s = (s * 6364136223846793005 + 1442695040888963407) & M
//!         out.append((s >> 11) / float(1 << 53))
//!     return out
//! def sample(seed, n, kind):   # kind: 0 uniform, 1 10·u², 2 1.1·u + 0.05, 3 ⌊20u⌋ (ties)
//!     u = lcg(seed, n)
//!     return [u, [x*x*10 for x in u], [x*1.1 + 0.05 for x in u],
//!             [float(int(x*20)) for x in u]][kind]
//! stats.kstwo.sf(d, n); stats.ks_2samp(a, b); stats.wasserstein_distance(a, b)
//! np.percentile(sorted(sample(21, 101, 1)), q); np.mean / np.std(ddof=1) of sample(22, 1000, 2)
//! ```

#![cfg(feature = "report")]

use simreal::analysis::stats::{
    ks_two_sample, kstwo_sf, percentile, wasserstein_1, KsMethod, Summary,
};

fn lcg(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// `(n, kind, seed)` as in the Python generator above.
fn sample((n, kind, seed): (usize, u8, u64)) -> Vec<f64> {
    lcg(seed, n)
        .into_iter()
        .map(|x| match kind {
            0 => x,
            1 => x * x * 10.0,
            2 => x * 1.1 + 0.05,
            _ => (x * 20.0).trunc(),
        })
        .collect()
}

fn assert_rel(got: f64, want: f64, rel_tol: f64, what: &str) {
    let err = if got == want {
        0.0
    } else {
        (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
    };
    assert!(
        err <= rel_tol,
        "{what}: got {got:e}, scipy {want:e} (rel err {err:e})"
    );
}

#[test]
fn kstwo_sf_matches_scipy_in_every_regime() {
    // (n, d, scipy.stats.kstwo.sf(d, n)); the comment names the method that applies.
    let cases: [(u64, f64, f64); 14] = [
        (10, 0.08, 0.9999978058034054),          // Ruben–Gambino, n·d ≤ 1
        (10, 0.95, 1.9531250000000172e-13),      // Ruben–Gambino, n·d ≥ n − 1
        (50, 0.6, 9.634070456142374e-18),        // d ≥ 1/2: twice the one-sided tail
        (50, 0.1, 0.6623112704658186),           // Durbin matrix (n ≤ 140)
        (100, 0.15, 0.019839242125641813),       // Pomeranz
        (140, 0.3, 1.1370251710737309e-11),      // Smirnov tail (n ≤ 140)
        (5000, 0.3, 0.0),                        // n·d² ≥ 370
        (1000, 0.05, 0.013012074781090332),      // Smirnov tail (n > 140)
        (5000, 0.003, 0.9999999999740126),       // Durbin matrix (n > 140)
        (500, 0.01, 0.9999999991073389),         // Durbin matrix (n > 140)
        (100000, 0.003, 0.3284563327726956),     // Pelz–Good
        (400000, 0.001, 0.8182307863228149),     // Pelz–Good, n > 100 000
        (1000000, 0.003, 3.039812751939269e-08), // Smirnov tail, large n
        (2000000, 0.002, 2.247704493692889e-07), // Smirnov tail, asymptotic (n > 10⁶)
    ];
    for (n, d, want) in cases {
        let got = kstwo_sf(n, d).unwrap();
        assert_rel(got, want, 1e-10, &format!("kstwo.sf({d}, {n})"));
    }
}

struct Case {
    a: (usize, u8, u64),
    b: (usize, u8, u64),
    statistic: f64,
    p_value: f64,
    location: f64,
    sign: i8,
    wasserstein: f64,
}

#[rustfmt::skip]
const CASES: [Case; 10] = [
    Case { a: (5, 0, 1), b: (5, 0, 2), statistic: 0.4, p_value: 0.873015873015873, location: 0.6483593939634306, sign: 1, wasserstein: 0.13155979474221582 },
    Case { a: (7, 0, 3), b: (3, 2, 4), statistic: 0.7142857142857143, p_value: 0.16666666666666666, location: 0.503585382873625, sign: 1, wasserstein: 0.34008967629375064 },
    Case { a: (10, 0, 5), b: (12, 1, 6), statistic: 0.75, p_value: 0.0013577753515834014, location: 0.9031788954360301, sign: 1, wasserstein: 3.466240508998023 },
    Case { a: (100, 0, 7), b: (60, 2, 8), statistic: 0.25333333333333335, p_value: 0.013608448060554761, location: 0.6626813473722986, sign: 1, wasserstein: 0.18131928687354315 },
    Case { a: (997, 0, 9), b: (1003, 2, 10), statistic: 0.15053635482719344, p_value: 2.3105975546056152e-10, location: 0.9952504116687532, sign: 1, wasserstein: 0.1030045246564867 },
    Case { a: (3000, 3, 11), b: (10000, 3, 12), statistic: 0.006333333333333333, p_value: 0.9999823940482809, location: 2.0, sign: -1, wasserstein: 0.043100000000000194 },
    Case { a: (10001, 0, 13), b: (50, 2, 14), statistic: 0.16000000000000003, p_value: 0.13839626223271506, location: 0.9999351696548677, sign: 1, wasserstein: 0.06451755410367756 },
    Case { a: (20000, 0, 15), b: (15000, 2, 16), statistic: 0.14090000000000003, p_value: 6.413140593136539e-149, location: 0.9981729900136908, sign: 1, wasserstein: 0.10317318561996774 },
    Case { a: (20000, 0, 17), b: (15000, 0, 18), statistic: 0.010016666666666674, p_value: 0.3537781834505086, location: 0.6675901530135839, sign: 1, wasserstein: 0.003863963369232796 },
    Case { a: (40000, 0, 19), b: (40000, 0, 20), statistic: 0.0037249999999999783, p_value: 0.943198185607591, location: 0.2583568381887045, sign: -1, wasserstein: 0.0009685800943238457 },
];

#[test]
fn ks_two_sample_matches_scipy_ks_2samp() {
    for case in &CASES {
        let (a, b) = (sample(case.a), sample(case.b));
        let what = format!("ks_2samp(n1 = {}, n2 = {})", a.len(), b.len());
        let r = ks_two_sample(&a, &b).unwrap();
        assert_rel(r.statistic, case.statistic, 1e-15, &what);
        assert_rel(r.p_value, case.p_value, 1e-12, &what);
        assert_eq!(r.statistic_location, case.location, "{what}");
        assert_eq!(r.statistic_sign, case.sign, "{what}");
        let expected_method = if a.len().max(b.len()) <= 10_000 {
            KsMethod::Exact
        } else {
            KsMethod::Asymptotic
        };
        assert_eq!(r.method, expected_method, "{what}");
    }
}

#[test]
fn wasserstein_1_matches_scipy() {
    for case in &CASES {
        let (a, b) = (sample(case.a), sample(case.b));
        let got = wasserstein_1(&a, &b).unwrap();
        let what = format!("wasserstein_distance(n1 = {}, n2 = {})", a.len(), b.len());
        assert_rel(got, case.wasserstein, 1e-13, &what);
    }
}

#[test]
fn percentiles_and_moments_match_numpy() {
    let mut x = sample((101, 1, 21));
    x.sort_by(f64::total_cmp);
    let cases = [
        (0.0, 0.002498652566422131),
        (1.0, 0.005995978839584225),
        (5.0, 0.025437474194234158),
        (25.0, 0.6462639966442741),
        (33.3, 1.3071942885103525),
        (50.0, 2.5916328203245524),
        (90.0, 7.87820419813144),
        (95.0, 8.775105258207564),
        (99.0, 9.572219463729118),
        (99.9, 9.867938998313242),
        (100.0, 9.900796724378143),
    ];
    for (q, want) in cases {
        assert_eq!(percentile(&x, q).unwrap(), want, "np.percentile(x, {q})");
    }
    let s = Summary::from_samples(&sample((1000, 2, 22))).unwrap();
    assert_rel(s.mean, 0.6051330059353922, 1e-15, "np.mean");
    assert_rel(s.std.unwrap(), 0.3238461782343276, 1e-14, "np.std(ddof=1)");
}
