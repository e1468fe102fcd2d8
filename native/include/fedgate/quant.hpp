// Clipping and stochastic quantization of float32 updates into ring elements (docs/native.md gives
// the exact arithmetic, which other clients must reproduce bit for bit).
#pragma once

#include <cstddef>
#include <cstdint>

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
// Elements per chunk: its 8 KiB of uint16 keystream is generated into a stack buffer and consumed
// while it is hot; the SIMD loops prefetch x one chunk ahead, which the keystream pass would
// otherwise leave the memory system idle for.
constexpr std::size_t kQuantChunk = 4096;
struct QuantConsts {
    double clip;   // clamp bound and offset
    double scale;  // (2^bits - 1) / (2 clip)
    double top;    // 2^bits - 1
};
// Each SIMD path handles a prefix of whole vectors and returns its length. It writes
// q_i = f_i + (h_i < g_i), appends every i with h_i == g_i (a tie, settled afterwards by the
// caller) to ties[*n_ties++], and ORs into *bad whether it met a non-finite input.
struct QuantOut {
    bool* bad;
    std::uint32_t* ties;
    std::size_t* n_ties;
};
std::size_t quantize_avx2_u16(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint16_t* out, const QuantOut& o);
std::size_t quantize_avx2_u32(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint32_t* out, const QuantOut& o);
std::size_t quantize_avx512_u16(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint16_t* out, const QuantOut& o);
std::size_t quantize_avx512_u32(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint32_t* out, const QuantOut& o);
}  // namespace detail

}  // namespace fedgate
