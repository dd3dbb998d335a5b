//! Hand-written CPU kernels for the places where candle's generic ops fall short on a serving
//! workload: projections with few rows (decode batches), attention over a paged KV cache
//! (which candle does not have), and the small per-element ops between them.
//!
//! Each kernel has a portable Rust version and an AVX2+FMA version written with intrinsics
//! (auto-vectorisation proved unreliable for these loop shapes), chosen at run time when the
//! CPU has the features, so the binary stays portable.

pub mod attention;
pub mod elementwise;
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

/// Whether the AVX2 code paths (AVX2, FMA, F16C) may run on this CPU (std caches detection).
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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
