//! Hand-written CPU kernels for the places where candle's generic ops fall short on a serving
//! workload: projections with few rows (decode batches), attention over a paged KV cache
//! (which candle does not have), and the small per-element ops between them.
//!
//! Each kernel has a portable Rust version and SIMD versions written with intrinsics
//! (auto-vectorisation proved unreliable for these loop shapes): AVX2+FMA everywhere, AVX-512
//! where 32 vector registers change the blocking. The path is chosen at run time from the
//! CPU's features ([`Isa`]), so the binary stays portable.

pub mod attention;
pub mod elementwise;
pub mod gemm;
pub mod linear;
pub mod tensors;

use half::{bf16, f16};

/// Element types the kernels read and write. Arithmetic always happens in f32.
pub trait Element: Copy + Send + Sync + Default + 'static {
    /// Widens to f32 (exact for all three types).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (round-to-nearest-even for the half types).
    fn from_f32(x: f32) -> Self;
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // bf16 is the top half of an f32; a shift (unlike a library call) vectorises.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// An instruction-set level the kernels have a code path for. A value is proof that the CPU
/// running the process supports it: the only constructors detect the features first, which
/// is what makes the `unsafe` calls into `#[target_feature]` code sound. Kernels that have
/// more than one SIMD path take it as an argument, so tests can run every path the host
/// supports side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Isa(IsaLevel);

/// The code paths, in increasing order of capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IsaLevel {
    /// Portable Rust (what the compiler makes of it for the build target).
    Scalar,
    /// AVX2, FMA and F16C: 8 f32 lanes, 16 vector registers.
    Avx2,
    /// AVX-512 F/BW/VL/DQ on top of the AVX2 set: 16 f32 lanes, 32 vector registers.
    Avx512,
}

impl IsaLevel {
    /// Lower-case name, as reports print it.
    pub fn as_str(self) -> &'static str {
        match self {
            IsaLevel::Scalar => "scalar",
            IsaLevel::Avx2 => "avx2",
            IsaLevel::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for IsaLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Isa {
    /// `level` if this CPU supports it (std caches the feature detection).
    pub fn new(level: IsaLevel) -> Option<Isa> {
        supported(level).then_some(Isa(level))
    }

    /// The most capable level this CPU supports: what the model runs (detected once; the
    /// projections ask for it on every call).
    pub fn best() -> Isa {
        static BEST: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            *Self::all_supported()
                .last()
                .expect("scalar is always supported")
        })
    }

    /// Every level this CPU supports, scalar first: what the tests compare.
    pub fn all_supported() -> Vec<Isa> {
        [IsaLevel::Scalar, IsaLevel::Avx2, IsaLevel::Avx512]
            .into_iter()
            .filter_map(Isa::new)
            .collect()
    }

    /// Which level this is.
    pub fn level(self) -> IsaLevel {
        self.0
    }
}

fn supported(level: IsaLevel) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let avx2 = has!("avx2") && has!("fma") && has!("f16c");
        match level {
            IsaLevel::Scalar => true,
            IsaLevel::Avx2 => avx2,
            IsaLevel::Avx512 => {
                avx2 && has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512dq")
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        level == IsaLevel::Scalar
    }
}

/// Whether the AVX2 code paths (AVX2, FMA, F16C) may run on this CPU (std caches detection).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    supported(IsaLevel::Avx2)
}

/// `a·b + c`, fused when the instantiation is compiled with FMA. Without the FMA target
/// feature `mul_add` would be a libm call, hence the const switch.
#[inline(always)]
pub(crate) fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// What the tests of both projection kernels share.
#[cfg(test)]
mod test_support {
    use rand::{Rng, SeedableRng};

    /// A projection kernel under test: `(x, m, w, n, k) → y`, as the `matmul_xwt` functions.
    pub(super) type XwtKernel<'a> = &'a dyn Fn(&[f32], usize, &[f32], usize, usize) -> Vec<f32>;

    /// x = [[1,2],[3,4]], w = [[1,0],[0,1],[1,1]] → y = [[1,2,3],[3,4,7]].
    pub(super) fn assert_hand_computed_2x3(what: &str, kernel: XwtKernel<'_>) {
        let y = kernel(&[1., 2., 3., 4.], 2, &[1., 0., 0., 1., 1., 1.], 3, 2);
        assert_eq!(y, vec![1., 2., 3., 3., 4., 7.], "{what}");
    }

    /// `kernel` against [`xwt_f64`] on random inputs of each `(m, n, k)` shape, every element
    /// within `tolerance(k)`.
    pub(super) fn assert_matches_reference(
        what: &str,
        shapes: &[(usize, usize, usize)],
        tolerance: impl Fn(usize) -> f64,
        kernel: XwtKernel<'_>,
    ) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for &(m, n, k) in shapes {
            let x = random(m * k, &mut rng);
            let w = random(n * k, &mut rng);
            let want = xwt_f64(&x, m, &w, n, k);
            let y = kernel(&x, m, &w, n, k);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert!(
                    (*a as f64 - b).abs() <= tolerance(k),
                    "{what}, {m}x{n}x{k} element {i}: {a} vs {b}"
                );
            }
        }
    }

    /// `len` values uniform in [-1, 1).
    pub(super) fn random(len: usize, rng: &mut impl Rng) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
    }

    /// `y = x·wᵀ` for `x: [m, k]`, `w: [n, k]`, summed in f64: the reference the kernels are
    /// held to.
    pub(super) fn xwt_f64(x: &[f32], m: usize, w: &[f32], n: usize, k: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for i in 0..m {
            for o in 0..n {
                y[i * n + o] = (0..k)
                    .map(|j| x[i * k + j] as f64 * w[o * k + j] as f64)
                    .sum();
            }
        }
        y
    }
}
