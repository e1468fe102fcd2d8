// Clipping, stochastic quantization and dequantization. The arithmetic is IEEE double with one
// rounding per operation and no fused multiply-add pattern (a*b+c) anywhere, so the scalar loop,
// the SIMD loops and other clients agree bit for bit.
#include "fedgate/quant.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "fedgate/chacha20.hpp"
#include "fedgate/cpu.hpp"
#include "fedgate/ring.hpp"

namespace fedgate {
namespace {

constexpr std::size_t kChunk = detail::kQuantChunk;
// The tie-break stream starts at this block counter. The main stream of n <= 2^35 elements uses
// blocks below 2^30 and the tie stream blocks 2^31 .. 2^31 + n/16 < 2^32: they never overlap.
constexpr std::uint32_t kTieCounter = std::uint32_t{1} << 31;

// f = floor(v), t = (v - f) * 2^16 and g = floor(t) of one element, as docs/native.md defines them.
struct Level {
    std::uint32_t f;
    std::uint32_t g;
    double t;
};

inline Level level_of(double xd, const detail::QuantConsts& c) {
    double v = (std::min(std::max(xd, -c.clip), c.clip) + c.clip) * c.scale;
    v = std::min(v, c.top);
    // 0 <= v < 2^32 and 0 <= t < 2^16, so truncation is floor (std::floor is a libm call on
    // baseline x86-64).
    const auto f = static_cast<std::uint32_t>(static_cast<std::int64_t>(v));
    const double t = (v - static_cast<double>(f)) * 65536.0;
    return {f, static_cast<std::uint32_t>(static_cast<std::int64_t>(t)), t};
}

template <typename T>
void quantize_scalar(const float* x, const std::uint16_t* h, std::size_t n,
                     const detail::QuantConsts& consts, T* out, const detail::QuantOut& o) {
    const detail::QuantConsts c = consts;  // a local copy: stores to out may alias the reference
    // Branch-free first pass (h < g is a coin flip, a branch on it would mispredict half the
    // time); the rare ties are looked up again in a second pass only when there are any.
    bool nonfinite = false, any_tie = false;
    for (std::size_t i = 0; i < n; ++i) {
        const double xd = x[i];
        nonfinite |= !std::isfinite(xd);
        const Level l = level_of(xd, c);
        const std::uint32_t hi = h[i];
        out[i] = static_cast<T>(l.f + static_cast<std::uint32_t>(hi < l.g));
        any_tie |= hi == l.g;
    }
    if (nonfinite) *o.bad = true;
    if (!any_tie) return;
    for (std::size_t i = 0; i < n; ++i) {
        if (h[i] == level_of(static_cast<double>(x[i]), c).g) {
            o.ties[(*o.n_ties)++] = static_cast<std::uint32_t>(o.offset + i);
        }
    }
}

// Settles the ties of one chunk: q = f + (w * 2^-32 < t - g), w = uint32 word i of the tie stream.
// About one element in 2^16 gets here, so one scalar ChaCha20 block per tie is cheap enough.
template <typename T>
void settle_ties(const float* x, std::size_t i0, const std::uint32_t* ties, std::size_t n_ties,
                 const ChachaKey& key, const detail::QuantConsts& c, T* out) {
    alignas(64) std::uint8_t block[kChachaBlockBytes];
    for (std::size_t k = 0; k < n_ties; ++k) {
        const std::size_t j = ties[k];
        const std::uint64_t i = i0 + j;
        const Level l = level_of(static_cast<double>(x[j]), c);
        detail::chacha20_block_scalar(key, kTieCounter + static_cast<std::uint32_t>(i / 16), block);
        std::uint32_t w;
        std::memcpy(&w, block + 4 * (i % 16), 4);
        const double u = static_cast<double>(w) * 0x1p-32;
        out[j] = static_cast<T>(l.f + (u < l.t - static_cast<double>(l.g) ? 1u : 0u));
    }
}

template <typename T>
std::size_t quantize_simd(const float* x, const std::uint16_t* h, std::size_t n,
                          const detail::QuantConsts& c, T* out, const detail::QuantOut& o) {
#if defined(__x86_64__)
    const SimdLevel level = simd_level();
    if constexpr (sizeof(T) == 2) {
        if (level == SimdLevel::avx512) return detail::quantize_avx512_u16(x, h, n, c, out, o);
        if (level == SimdLevel::avx2) return detail::quantize_avx2_u16(x, h, n, c, out, o);
    } else {
        if (level == SimdLevel::avx512) return detail::quantize_avx512_u32(x, h, n, c, out, o);
        if (level == SimdLevel::avx2) return detail::quantize_avx2_u32(x, h, n, c, out, o);
    }
#else
    (void)x, (void)h, (void)n, (void)c, (void)out, (void)o;
#endif
    return 0;
}

// The prefix of a chunk that a path drawing its own keystream handled (0 where there is none).
template <typename T>
std::size_t quantize_fused(const float* x, std::size_t n, std::size_t extent, const ChachaKey& key,
                           std::uint32_t counter, const detail::QuantConsts& c, T* out,
                           const detail::QuantOut& o) {
#if defined(__x86_64__)
    if (simd_level() == SimdLevel::avx512) {
        if constexpr (sizeof(T) == 2) {
            return detail::quantize_avx512_fused_u16(x, n, extent, key, counter, c, out, o);
        } else {
            return detail::quantize_avx512_fused_u32(x, n, extent, key, counter, c, out, o);
        }
    }
#else
    (void)x, (void)n, (void)extent, (void)key, (void)counter, (void)c, (void)out, (void)o;
#endif
    return 0;
}

// One chunk of len elements (x and out valid for `extent`): the fused path where there is one,
// then the keystream of the rest into `words` for the SIMD loop and the scalar tail. Tie indices
// are relative to x.
template <typename T>
void quantize_chunk(const float* x, std::size_t len, std::size_t extent, const ChachaKey& key,
                    std::uint32_t counter, const detail::QuantConsts& c, T* out,
                    std::uint16_t* words, const detail::QuantOut& o) {
    const std::size_t fused = quantize_fused(x, len, extent, key, counter, c, out, o);
    if (fused == len) return;
    // fused is a whole number of blocks (32 elements each), so the rest starts on a block.
    const auto rest_counter = counter + static_cast<std::uint32_t>(fused * 2 / kChachaBlockBytes);
    auto* const bytes = reinterpret_cast<std::uint8_t*>(words);
    chacha20_keystream(key, rest_counter, bytes, (len - fused) * 2);
    const std::size_t simd = quantize_simd(x + fused, words, len - fused, c, out + fused,
                                           detail::QuantOut{o.bad, o.ties, o.n_ties, fused});
    const std::size_t at = fused + simd;
    quantize_scalar(x + at, words + simd, len - at, c, out + at,
                    detail::QuantOut{o.bad, o.ties, o.n_ties, at});
}

double check_clip(double clip) {
    if (!(std::isfinite(clip) && clip > 0.0)) {
        throw std::invalid_argument("clip must be a finite positive number");
    }
    return clip;
}

// 2 clip and scale = top / (2 clip) must be finite: an overflow turns v into Inf or NaN, whose
// conversion to an integer is undefined (clip below about 1e-299 at 32 bits, or above 8.9e307).
double check_scale(double top, double clip) {
    const double scale = top / (2.0 * clip);
    if (!(std::isfinite(2.0 * clip) && std::isfinite(scale))) {
        throw std::invalid_argument("clip is out of range: (2^bits - 1) / (2 clip) overflows");
    }
    return scale;
}

}  // namespace

double l2_norm(const float* x, std::size_t n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int j = 0; j < 8; ++j) {
            const double v = x[i + j];
            acc[j] += v * v;
        }
    }
    for (int j = 0; i < n; ++i, ++j) {
        const double v = x[i];
        acc[j] += v * v;
    }
    const double total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    return std::sqrt(total);
}

double clip_l2(const float* x, float* out, std::size_t n, double max_norm) {
    if (!(max_norm > 0.0)) throw std::invalid_argument("max_norm must be positive");
    const double norm = l2_norm(x, n);
    if (!(norm > max_norm)) {  // also a zero vector, and NaN (refused by the Python face)
        if (n != 0) std::memcpy(out, x, n * sizeof(float));
        return norm;
    }
    // Rounding to float32 can push the norm a hair above max_norm; shrink until it is not.
    double f = max_norm / norm;
    for (int attempt = 0; attempt < 64; ++attempt, f *= 1.0 - 0x1p-20) {
        for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(x[i] * f);
        if (l2_norm(out, n) <= max_norm) return norm;
    }
    std::fill(out, out + n, 0.0f);
    return norm;
}

template <typename T>
std::size_t quantize(const float* x, std::size_t n, double clip, unsigned bits,
                     const std::uint8_t seed[32], T* out) {
    const double top = static_cast<double>(ring_mask<T>(bits));
    const detail::QuantConsts consts{check_clip(clip), check_scale(top, clip), top};
    chacha20_check_range(kTieCounter, static_cast<std::uint64_t>(n) * 4);  // implies the main range
    const ChachaKey key = chacha20_setup(seed, kLibsodiumDrgNonce);
    alignas(64) std::uint16_t words[kChunk];
    std::uint32_t ties[kChunk];
    bool bad = false;
    std::size_t n_bad = 0;
    for (std::size_t i0 = 0; i0 < n; i0 += kChunk) {
        const std::size_t len = std::min(kChunk, n - i0);
        const auto counter = static_cast<std::uint32_t>(i0 * 2 / kChachaBlockBytes);
        std::size_t n_ties = 0;
        quantize_chunk(x + i0, len, n - i0, key, counter, consts, out + i0, words,
                       detail::QuantOut{&bad, ties, &n_ties, 0});
        settle_ties(x + i0, i0, ties, n_ties, key, consts, out + i0);
    }
    if (bad) {
        for (std::size_t i = 0; i < n; ++i) n_bad += !std::isfinite(x[i]);
    }
    return n_bad;
}

template <typename T>
std::size_t dequantize(const T* total, std::size_t n, std::uint64_t count, double clip,
                       unsigned bits, float* out) {
    check_clip(clip);
    const std::uint64_t top = ring_mask<T>(bits);
    if (count < 1 || count > 0xFFFFFFFFull / top) {
        throw std::invalid_argument("count * (2^bits - 1) must be a positive 32-bit number");
    }
    const std::uint64_t limit = count * top;
    // (total - count*top/2) * step is exact up to the single final rounding of the product, and
    // has no a*b+c shape a compiler could fuse.
    const double offset = static_cast<double>(limit) / 2.0;
    const double step = 2.0 * clip / static_cast<double>(top);
    std::size_t n_bad = 0;
    for (std::size_t i = 0; i < n; ++i) {
        n_bad += total[i] > limit;
        out[i] = static_cast<float>((static_cast<double>(total[i]) - offset) * step);
    }
    return n_bad;
}

template std::size_t quantize<std::uint16_t>(const float*, std::size_t, double, unsigned,
                                             const std::uint8_t*, std::uint16_t*);
template std::size_t quantize<std::uint32_t>(const float*, std::size_t, double, unsigned,
                                             const std::uint8_t*, std::uint32_t*);
template std::size_t dequantize<std::uint16_t>(const std::uint16_t*, std::size_t, std::uint64_t,
                                               double, unsigned, float*);
template std::size_t dequantize<std::uint32_t>(const std::uint32_t*, std::size_t, std::uint64_t,
                                               double, unsigned, float*);

}  // namespace fedgate
