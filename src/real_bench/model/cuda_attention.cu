// Paged decode attention for the GPU path (`AttentionPath::CudaKernels`): one query token per
// sequence against its cached context, read straight from the paged KV cache through the
// sequence's block table -- no gather, no padding to the longest context in the batch.
//
// Cache layout (one layer): K and V are each [num_kv_heads, num_slots, HEAD_DIM], token j of a
// sequence in slot block_table[j / block_size] * block_size + j % block_size.
//
// Work split (split-K, as flash-decoding does): block (head, seq, split) attends to tokens
// [split * PARTITION, (split + 1) * PARTITION) of the context. Inside a block, each warp takes
// TOKENS_PER_WARP tokens at a time, GROUP lanes per token (each lane holds HEAD_DIM / GROUP
// elements of q, k and v), so a warp keeps TOKENS_PER_WARP rows of K and V in flight. Scores,
// softmax and the weighted sum of V run in f32 with an online softmax. A context of one
// partition is finished in place; longer ones leave (max, sum, unnormalized output) per split
// and `paged_decode_reduce` combines them.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>

namespace {

constexpr int WARPS = 8;
constexpr int THREADS = WARPS * 32;
// Tokens per split: 64 tokens per block pass (8 warps x 8 tokens at HEAD_DIM 128), 4 passes.
constexpr int PARTITION = 256;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }

// E consecutive elements loaded as 16-byte vectors (rows are 16-byte aligned: the host checks).
template <typename T, int E> struct Row {
  static_assert((E * sizeof(T)) % 16 == 0, "a lane's share must be whole 16-byte vectors");
  uint4 vec[E * sizeof(T) / 16];
  __device__ __forceinline__ void load(const T* __restrict__ p) {
    const uint4* v = reinterpret_cast<const uint4*>(p);
#pragma unroll
    for (int i = 0; i < int(E * sizeof(T) / 16); ++i) vec[i] = __ldg(v + i);
  }
  __device__ __forceinline__ float operator[](int e) const {
    return to_f32(reinterpret_cast<const T*>(vec)[e]);
  }
};

// One split of one (head, sequence). GROUP lanes per token, E = HEAD_DIM / GROUP per lane.
template <typename T, int HEAD_DIM, int GROUP>
__device__ void decode_split(T* __restrict__ out, float* __restrict__ partial,
                             const T* __restrict__ q, const T* __restrict__ cache_k,
                             const T* __restrict__ cache_v,
                             const uint32_t* __restrict__ block_tables,
                             const uint32_t* __restrict__ context_lens, int num_heads,
                             int num_kv_heads, long long num_slots, int block_size, int max_blocks,
                             int max_splits, float scale) {
  constexpr int E = HEAD_DIM / GROUP;
  constexpr int TOKENS_PER_WARP = 32 / GROUP;
  const int head = blockIdx.x, seq = blockIdx.y, split = blockIdx.z;
  const int ctx = int(context_lens[seq]);
  const int start = split * PARTITION;
  if (start >= ctx) return;  // this sequence is shorter than the longest: nothing to do
  const int end = min(ctx, start + PARTITION);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int token_in_warp = lane / GROUP, part = lane % GROUP;
  const int kv_head = head / (num_heads / num_kv_heads);
  const uint32_t* table = block_tables + size_t(seq) * max_blocks;
  const size_t head_base = size_t(kv_head) * size_t(num_slots) * HEAD_DIM + size_t(part) * E;

  float qv[E];
  {
    Row<T, E> r;
    r.load(q + (size_t(seq) * num_heads + head) * HEAD_DIM + size_t(part) * E);
#pragma unroll
    for (int e = 0; e < E; ++e) qv[e] = r[e] * scale;
  }
  // Online softmax, per lane: m is warp-uniform, l and acc cover this lane's tokens.
  float m = -INFINITY, l = 0.f, acc[E];
#pragma unroll
  for (int e = 0; e < E; ++e) acc[e] = 0.f;

  for (int base = start + warp * TOKENS_PER_WARP; base < end; base += WARPS * TOKENS_PER_WARP) {
    const int j = base + token_in_warp;
    const bool valid = j < end;
    float dot = 0.f;
    Row<T, E> vrow;
    if (valid) {
      const size_t slot = size_t(table[j / block_size]) * block_size + j % block_size;
      Row<T, E> krow;
      krow.load(cache_k + head_base + slot * HEAD_DIM);
      vrow.load(cache_v + head_base + slot * HEAD_DIM);
#pragma unroll
      for (int e = 0; e < E; ++e) dot += qv[e] * krow[e];
    }
#pragma unroll
    for (int off = GROUP / 2; off > 0; off >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, off);
    const float s = valid ? dot : -INFINITY;
    float tile_max = s;
#pragma unroll
    for (int off = 16; off >= GROUP; off >>= 1)
      tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, off));
    // The warp's first token is always valid (base < end), so m_new is finite.
    const float m_new = fmaxf(m, tile_max);
    const float alpha = __expf(m - m_new);
    const float p = valid ? __expf(s - m_new) : 0.f;
    l = l * alpha + p;
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] = acc[e] * alpha + (valid ? p * vrow[e] : 0.f);
    m = m_new;
  }
  // Sum over the warp's token groups (lanes with the same `part`).
#pragma unroll
  for (int off = 16; off >= GROUP; off >>= 1) {
    l += __shfl_xor_sync(0xffffffffu, l, off);
#pragma unroll
    for (int e = 0; e < E; ++e) acc[e] += __shfl_xor_sync(0xffffffffu, acc[e], off);
  }
  __shared__ float warp_m[WARPS], warp_l[WARPS];
  __shared__ float warp_acc[WARPS][HEAD_DIM];
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
  if (token_in_warp == 0) {
#pragma unroll
    for (int e = 0; e < E; ++e) warp_acc[warp][part * E + e] = acc[e];
  }
  __syncthreads();
  float block_m = -INFINITY;
#pragma unroll
  for (int w = 0; w < WARPS; ++w) block_m = fmaxf(block_m, warp_m[w]);
  float block_l = 0.f;
#pragma unroll
  for (int w = 0; w < WARPS; ++w)
    if (warp_l[w] > 0.f) block_l += warp_l[w] * __expf(warp_m[w] - block_m);
  const size_t row = size_t(seq) * num_heads + head;
  for (int d = threadIdx.x; d < HEAD_DIM; d += THREADS) {
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w)
      if (warp_l[w] > 0.f) o += warp_acc[w][d] * __expf(warp_m[w] - block_m);
    if (gridDim.z == 1) {
      out[row * HEAD_DIM + d] = from_f32<T>(o / block_l);
    } else {
      partial[(row * max_splits + split) * (HEAD_DIM + 2) + d] = o;
    }
  }
  if (gridDim.z > 1 && threadIdx.x == 0) {
    float* tail = partial + (row * max_splits + split) * (HEAD_DIM + 2) + HEAD_DIM;
    tail[0] = block_m;
    tail[1] = block_l;
  }
}

// Combines the splits of each (head, sequence): block (head, seq), one thread per element.
template <typename T, int HEAD_DIM>
__device__ void reduce_splits(T* __restrict__ out, const float* __restrict__ partial,
                              const uint32_t* __restrict__ context_lens, int num_heads,
                              int max_splits) {
  const int head = blockIdx.x, seq = blockIdx.y;
  const int splits = (int(context_lens[seq]) + PARTITION - 1) / PARTITION;
  const size_t row = size_t(seq) * num_heads + head;
  const float* p = partial + row * max_splits * (HEAD_DIM + 2);
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, p[s * (HEAD_DIM + 2) + HEAD_DIM]);
  float l = 0.f;
  for (int s = 0; s < splits; ++s) {
    const float* t = p + s * (HEAD_DIM + 2) + HEAD_DIM;
    l += t[1] * __expf(t[0] - m);
  }
  for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) {
    float o = 0.f;
    for (int s = 0; s < splits; ++s)
      o += p[s * (HEAD_DIM + 2) + d] * __expf(p[s * (HEAD_DIM + 2) + HEAD_DIM] - m);
    out[row * HEAD_DIM + d] = from_f32<T>(o / l);
  }
}

}  // namespace

#define PAGED_DECODE(SUFFIX, T, HEAD_DIM, GROUP)                                               \
  extern "C" __global__ void __launch_bounds__(THREADS) paged_decode_##SUFFIX##_hd##HEAD_DIM(   \
      T* __restrict__ out, float* __restrict__ partial, const T* __restrict__ q,              \
      const T* __restrict__ cache_k, const T* __restrict__ cache_v,                           \
      const uint32_t* __restrict__ block_tables, const uint32_t* __restrict__ context_lens,   \
      int num_heads, int num_kv_heads, long long num_slots, int block_size, int max_blocks,    \
      int max_splits, float scale) {                                                           \
    decode_split<T, HEAD_DIM, GROUP>(out, partial, q, cache_k, cache_v, block_tables,          \
                                     context_lens, num_heads, num_kv_heads, num_slots,         \
                                     block_size, max_blocks, max_splits, scale);               \
  }                                                                                            \
  extern "C" __global__ void paged_decode_reduce_##SUFFIX##_hd##HEAD_DIM(                      \
      T* __restrict__ out, const float* __restrict__ partial,                                 \
      const uint32_t* __restrict__ context_lens, int num_heads, int max_splits) {              \
    reduce_splits<T, HEAD_DIM>(out, partial, context_lens, num_heads, max_splits);             \
  }

// GROUP lanes per token keep each lane's share at 32 elements (64 bytes in 16 bits).
PAGED_DECODE(f32, float, 64, 2)
PAGED_DECODE(f32, float, 128, 4)
PAGED_DECODE(f32, float, 256, 8)
PAGED_DECODE(bf16, __nv_bfloat16, 64, 2)
PAGED_DECODE(bf16, __nv_bfloat16, 128, 4)
PAGED_DECODE(bf16, __nv_bfloat16, 256, 8)
PAGED_DECODE(f16, __half, 64, 2)
PAGED_DECODE(f16, __half, 128, 4)
PAGED_DECODE(f16, __half, 256, 8)
