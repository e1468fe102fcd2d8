// Clipping and stochastic quantization of float32 updates into ring elements (docs/native.md gives
// the exact arithmetic, which other clients must reproduce bit for bit).
#pragma once

#include <cstddef>
#include <cstdint>

#include "fedgate/chacha20.hpp"

namespace fedgate {

// Euclidean norm with double accumulation in a fixed order (eight interleaved partial sums), so the
// result is the same at every SIMD level.
double l2_norm(const float* x, std::size_t n);

// out = x * f with f <= 1 chosen so that l2_norm(out) <= max_norm; returns l2_norm(x).
double clip_l2(const float* x, float* out, std::size_t n, double max_norm);

// q_i = stochastic rounding of the level (clamp(x_i) + clip) * (2^bits - 1) / (2 clip). The
// randomness is one uint16 word of the ChaCha20 mask PRG of seed per element, compared with the top
// 16 bits of the fraction; on equality (probability 2^-16) a uint32 word of the same key's keystream
// from block 2^31 on decides. Returns the number of non-finite inputs (their outputs are
// meaningless). T must hold 2^bits - 1.
template <typename T>
std::size_t quantize(const float* x, std::size_t n, double clip, unsigned bits,
                     const std::uint8_t seed[32], T* out);

// out_i = float32 of (total_i - count (2^bits - 1) / 2) * step, step = 2 clip / (2^bits - 1): the
// estimate of the sum of `count` clipped vectors. Returns how many totals exceed count (2^bits - 1),
// which no honest sum can. Requires count (2^bits - 1) < 2^32.
template <typename T>
std::size_t dequantize(const T* total, std::size_t n, std::uint64_t count, double clip,
                       unsigned bits, float* out);

namespace detail {
// Elements per chunk, whose tie indices are collected and settled together; the paths that do not
// draw their own keystream get the chunk's 8 KiB of uint16 words in a stack buffer.
constexpr std::size_t kQuantChunk = 4096;
struct QuantConsts {
    double clip;   // clamp bound and offset
    double scale;  // (2^bits - 1) / (2 clip)
    double top;    // 2^bits - 1
};
// Each SIMD path handles a prefix of its input and returns its length. It writes
// q_i = f_i + (h_i < g_i), appends offset + i for every i with h_i == g_i (a tie, settled
// afterwards by the caller) to ties[*n_ties++], and sets *bad if it met a non-finite input (it may
// also set it for finite inputs; the caller then counts exactly).
struct QuantOut {
    bool* bad;
    std::uint32_t* ties;
    std::size_t* n_ties;
    std::size_t offset;
};
std::size_t quantize_avx2_u16(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint16_t* out, const QuantOut& o);
std::size_t quantize_avx2_u32(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint32_t* out, const QuantOut& o);
std::size_t quantize_avx512_u16(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint16_t* out, const QuantOut& o);
std::size_t quantize_avx512_u32(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint32_t* out, const QuantOut& o);
// AVX-512 drawing its own keystream: whole batches of 512 elements, whose uint16 words are the 16
// ChaCha20 blocks from block `counter` on (element 0 at the first byte of that block). x and out
// are valid for `extent` >= n elements, which the prefetches may reach into.
std::size_t quantize_avx512_fused_u16(const float* x, std::size_t n, std::size_t extent,
                                      const ChachaKey& key, std::uint32_t counter,
                                      const QuantConsts& c, std::uint16_t* out, const QuantOut& o);
std::size_t quantize_avx512_fused_u32(const float* x, std::size_t n, std::size_t extent,
                                      const ChachaKey& key, std::uint32_t counter,
                                      const QuantConsts& c, std::uint32_t* out, const QuantOut& o);
}  // namespace detail

}  // namespace fedgate
