// The AVX-512 quantize loop: docs/native.md's arithmetic on 8 doubles per operation (up to 255
// levels on 16 float32 first, see approx16), with the ChaCha20 draws generated 16 blocks (512
// elements) at a time and consumed while they are in L1.
// Ties (h == g) are only recorded here; the caller settles them with the scalar code.
#include "fedgate/quant.hpp"

#if defined(__x86_64__)
// GCC 12 flags its own _mm512_undefined_epi32() inside the AVX-512 intrinsics as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <array>
#include <utility>

#include "chacha20_avx512.hpp"

namespace fedgate::detail {
namespace {

#define FG_AVX512 __attribute__((target("avx512f,avx512bw,prfchw")))

// The loops work on F = floor(v * 2^16) = f * 2^16 + g, one integer per element (v * 2^16 is a
// power-of-two scaling, exact; f * 2^16 is a whole number, so the floor splits). With s = F + 65535
// - h: s >> 16 = f + (g > h), and the low 16 bits of s are 0xFFFF exactly when g == h (a tie):
// g - h + 65535 lies in [65536, 131070] when g > h and in [0, 65534] when g < h.
//
// Exact specialisations, as bits of one template argument:
// kFold: the 2^16 is folded into the constants, v * 2^16 = min(fl(fl(c + clip) * scale * 2^16),
//   top * 2^16). Power-of-two scaling commutes with rounding while no operand or result leaves the
//   normal range; for 2^-60 <= clip <= 2^60 a nonzero fl(c + clip) is at least 2^-149 (c is a
//   float32 or +-clip) and scale at least 2^-61, so every product is normal (>= 2^-210) or zero.
//   Other clips multiply by 2^16 after the clamp to top, which is exact for any double.
// kFloatClamp: clip is a float32, so clamping the float32 x equals clamping its double (both
//   compares exact), 16 lanes at once.
// kNoTop: min(v, top) is known to be a no-op. v = fl(fl(c + clip) * scale) is monotone in c and
//   c + clip <= 2 clip, so when fl(2 clip * scale) <= top the clamp never acts.
constexpr unsigned kFold = 4, kFloatClamp = 2, kNoTop = 1;
constexpr std::size_t kBatch = 512;  // elements per 16 ChaCha20 blocks (two bytes each)
// How far ahead of the batch being computed its successors' input and output are prefetched, in
// elements (measured with cold caches on an Intel Xeon, family 6 model 207: without the prefetches
// quantize took about a third longer; 1 to 8 batches ahead were within the noise of each other).
constexpr std::size_t kAhead = 4 * kBatch;

struct Consts16 {
    __m512 lo32, hi32, scale32;
    __m512d lo, hi, scale, top, two16, magic;
};

// The float32 constants only where they are used: elsewhere clip or scale may lie outside the
// float range, and converting such a double to float is undefined.
template <unsigned kF>
FG_AVX512 inline Consts16 consts16(const QuantConsts& c) {
    constexpr bool fold = (kF & kFold) != 0, float_clip = (kF & kFloatClamp) != 0;
    const float clip32 = float_clip || fold ? static_cast<float>(c.clip) : 0.0f;
    const float scale32 = fold ? static_cast<float>(c.scale * 65536.0) : 0.0f;
    const double s16 = fold ? 65536.0 : 1.0;
    return {_mm512_set1_ps(-clip32),         _mm512_set1_ps(clip32),
            _mm512_set1_ps(scale32),
            _mm512_set1_pd(-c.clip),         _mm512_set1_pd(c.clip),
            _mm512_set1_pd(c.scale * s16),   _mm512_set1_pd(c.top * s16),
            _mm512_set1_pd(65536.0),         _mm512_set1_pd(0x1p52 + 65535.0)};
}

// 0 <= v * 2^16 <= top * 2^16 < 2^48: adding 2^52 + 65535 rounded toward zero gives exactly
// 2^52 + 65535 + F (ulp 1 in [2^52, 2^53)), so the low bits of the double are F + 65535: a floor
// and a conversion in one addition.
template <unsigned kF>
FG_AVX512 inline __m512i biased_levels(__m512d c, const Consts16& k) {
    __m512d v = _mm512_mul_pd(_mm512_add_pd(c, k.hi), k.scale);
    if constexpr ((kF & kNoTop) == 0) v = _mm512_min_pd(v, k.top);
    if constexpr ((kF & kFold) == 0) v = _mm512_mul_pd(v, k.two16);
    constexpr int kTowardZero = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;
    return _mm512_castpd_si512(_mm512_add_round_pd(v, k.magic, kTowardZero));
}

// Sixteen clamped doubles; adds x into *acc, whose lanes stay finite unless some x is not (or the
// sum overflows, which only costs the caller an exact recount).
template <unsigned kF>
FG_AVX512 inline void clamped16(const float* x, const Consts16& k, __m512* acc, __m512d* d0,
                                __m512d* d1) {
    __m512 xf = _mm512_loadu_ps(x);
    *acc = _mm512_add_ps(*acc, xf);
    if constexpr ((kF & kFloatClamp) != 0) {
        xf = _mm512_min_ps(_mm512_max_ps(xf, k.lo32), k.hi32);
        *d0 = _mm512_cvtps_pd(_mm512_castps512_ps256(xf));
        *d1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1)));
    } else {
        *d0 = _mm512_min_pd(_mm512_max_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x)), k.lo), k.hi);
        *d1 = _mm512_min_pd(_mm512_max_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + 8)), k.lo), k.hi);
    }
}

FG_AVX512 inline __m512i low_dwords() {  // dword 2j of a | b, j = 0..15: the low halves of qwords
    return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}

// s = F + 65535 - h of sixteen elements as uint32 lanes (needs top <= 2^16 - 1: s < 2^32).
template <unsigned kF>
FG_AVX512 inline __m512i sums16(const float* x, const std::uint16_t* h, const Consts16& k,
                                __m512* acc) {
    __m512d d0, d1;
    clamped16<kF>(x, k, acc, &d0, &d1);
    const __m512i f = _mm512_permutex2var_epi32(biased_levels<kF>(d0, k), low_dwords(),
                                                biased_levels<kF>(d1, k));
    const __m256i h16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h));
    return _mm512_sub_epi32(f, _mm512_cvtepu16_epi32(h16));
}

// Word lanes set in mask (one per element, 2^stride bits apart) are ties at base + bit >> stride.
inline void push_tie_bits(std::uint64_t mask, unsigned stride, std::size_t base,
                          const QuantOut& o) {
    while (mask != 0) {
        o.ties[(*o.n_ties)++] =
            static_cast<std::uint32_t>(o.offset + base + (__builtin_ctzll(mask) >> stride));
        mask &= mask - 1;
    }
}

// Levels up to 2^16 - 1, 32 elements per pass (n a multiple of 32): two vectors of s, the tie
// test on their low words. `base` is the index of x[0] for the tie list.
template <unsigned kF, typename T>
FG_AVX512 void narrow_loop(const float* x, const std::uint16_t* h, std::size_t n, std::size_t base,
                           const Consts16& consts, T* out, const QuantOut& o, __m512* acc) {
    // Locals, not the references: with -fno-strict-aliasing every store to out could change
    // *acc and the constants, and the sum would make a round trip through memory each pass.
    const Consts16 k = consts;
    __m512 sum = *acc;
    const __m512i high_words = _mm512_setr_epi64(  // word 2j + 1 of s0 | s1, j = 0..31
        0x0007000500030001, 0x000f000d000b0009, 0x0017001500130011, 0x001f001d001b0019,
        0x0027002500230021, 0x002f002d002b0029, 0x0037003500330031, 0x003f003d003b0039);
    const __m512i ones = _mm512_set1_epi32(-1);
    for (std::size_t i = 0; i < n; i += 32) {
        const __m512i s0 = sums16<kF>(x + i, h + i, k, &sum);
        const __m512i s1 = sums16<kF>(x + i + 16, h + i + 16, k, &sum);
        if constexpr (sizeof(T) == 2) {
            _mm512_storeu_si512(out + i, _mm512_permutex2var_epi16(s0, high_words, s1));
        } else {
            _mm512_storeu_si512(out + i, _mm512_srli_epi32(s0, 16));
            _mm512_storeu_si512(out + i + 16, _mm512_srli_epi32(s1, 16));
        }
        const __mmask32 t0 = _mm512_mask_cmpeq_epi16_mask(0x55555555u, s0, ones);
        const __mmask32 t1 = _mm512_mask_cmpeq_epi16_mask(0x55555555u, s1, ones);
        if (__builtin_expect(!_kortestz_mask32_u8(t0, t1), 0)) {
            push_tie_bits(t0, 1, base + i, o);
            push_tie_bits(t1, 1, base + i + 16, o);
        }
    }
    *acc = sum;
}

// Levels up to 255 with 2^-60 <= clip <= 2^60: F from float32 arithmetic first, the binary64
// path only where that could differ. With K = fl32(clip) and S = fl32(scale * 2^16), the float32
// value p = fl32(fl32(clamp(x, K) + K) * S) is within 4 of v * 2^16: the clamps differ by at most
// |K - clip| <= 2^-24 clip, three float32 roundings add at most 3.0001 * 2^-24 (2 clip scale 2^16)
// and the clamp bound 2 * 2^-24 clip scale 2^16, in all < 4.0002 * 2^-24 * top * 2^16 * (1 + 2^-52)
// < 4 for top <= 255 (the binary64 roundings, the skipped min(v, top), underflow and the
// subnormal cases add less than 2^-40). So |trunc(p) - F| <= 4, and u = trunc(p) + 65535 - h
// differs from s by at most 4: where the low 16 bits of u lie in [8, 65526], u >> 16 = s >> 16
// and s is no tie. Passes with any other lane (about 17 lanes in 2^16) are redone exactly.
template <unsigned kF>
FG_AVX512 inline __m512i approx16(const float* x, const std::uint16_t* h, const Consts16& k,
                                  __m512* acc) {
    const __m512 xf = _mm512_loadu_ps(x);
    *acc = _mm512_add_ps(*acc, xf);
    const __m512 c = _mm512_min_ps(_mm512_max_ps(xf, k.lo32), k.hi32);
    const __m512i f = _mm512_cvttps_epi32(_mm512_mul_ps(_mm512_add_ps(c, k.hi32), k.scale32));
    const __m256i h16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h));
    const __m256i neg = _mm256_xor_si256(h16, _mm256_set1_epi32(-1));  // 65535 - h
    return _mm512_add_epi32(f, _mm512_cvtepu16_epi32(neg));
}

FG_AVX512 inline __mmask32 unsure(__m512i u) {  // low 16 bits outside [8, 65526]
    const __m512i w = _mm512_sub_epi32(u, _mm512_set1_epi32(8));
    return _mm512_mask_cmpgt_epu16_mask(0x55555555u, w, _mm512_set1_epi32(65518));
}

template <unsigned kF, typename T>
FG_AVX512 void float_loop(const float* x, const std::uint16_t* h, std::size_t n, std::size_t base,
                          const Consts16& consts, T* out, const QuantOut& o, __m512* acc) {
    const Consts16 k = consts;  // locals, as in narrow_loop
    __m512 sum = *acc;
    const __m512i high_words = _mm512_setr_epi64(  // word 2j + 1 of s0 | s1, j = 0..31
        0x0007000500030001, 0x000f000d000b0009, 0x0017001500130011, 0x001f001d001b0019,
        0x0027002500230021, 0x002f002d002b0029, 0x0037003500330031, 0x003f003d003b0039);
    const __m512i ones = _mm512_set1_epi32(-1);
    for (std::size_t i = 0; i < n; i += 32) {
        __m512i s0 = approx16<kF>(x + i, h + i, k, &sum);
        __m512i s1 = approx16<kF>(x + i + 16, h + i + 16, k, &sum);
        if (__builtin_expect(!_kortestz_mask32_u8(unsure(s0), unsure(s1)), 0)) {
            s0 = sums16<kF>(x + i, h + i, k, &sum);
            s1 = sums16<kF>(x + i + 16, h + i + 16, k, &sum);
            push_tie_bits(_mm512_mask_cmpeq_epi16_mask(0x55555555u, s0, ones), 1, base + i, o);
            push_tie_bits(_mm512_mask_cmpeq_epi16_mask(0x55555555u, s1, ones), 1, base + i + 16, o);
        }
        if constexpr (sizeof(T) == 2) {
            _mm512_storeu_si512(out + i, _mm512_permutex2var_epi16(s0, high_words, s1));
        } else {
            _mm512_storeu_si512(out + i, _mm512_srli_epi32(s0, 16));
            _mm512_storeu_si512(out + i + 16, _mm512_srli_epi32(s1, 16));
        }
    }
    *acc = sum;
}

// Levels above 2^16 - 1 (uint32 out): s = F + 65535 - h needs up to 49 bits, in uint64 lanes;
// 16 elements per pass (n a multiple of 16).
template <unsigned kF>
FG_AVX512 void wide_loop(const float* x, const std::uint16_t* h, std::size_t n, std::size_t base,
                         const Consts16& consts, std::uint32_t* out, const QuantOut& o,
                         __m512* acc) {
    const Consts16 k = consts;  // locals, as in narrow_loop
    __m512 sum = *acc;
    const __m512i ones = _mm512_set1_epi32(-1);
    for (std::size_t i = 0; i < n; i += 16) {
        __m512d d0, d1;
        clamped16<kF>(x + i, k, &sum, &d0, &d1);
        const __m512i s0 = _mm512_sub_epi64(biased_levels<kF>(d0, k), _mm512_cvtepu16_epi64(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
        const __m512i s1 = _mm512_sub_epi64(biased_levels<kF>(d1, k), _mm512_cvtepu16_epi64(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i + 8))));
        const __m512i q0 = _mm512_srli_epi64(s0, 16), q1 = _mm512_srli_epi64(s1, 16);
        _mm512_storeu_si512(out + i, _mm512_permutex2var_epi32(q0, low_dwords(), q1));
        const __mmask32 t0 = _mm512_mask_cmpeq_epi16_mask(0x11111111u, s0, ones);
        const __mmask32 t1 = _mm512_mask_cmpeq_epi16_mask(0x11111111u, s1, ones);
        if (__builtin_expect(!_kortestz_mask32_u8(t0, t1), 0)) {
            push_tie_bits(t0, 2, base + i, o);
            push_tie_bits(t1, 2, base + i + 8, o);
        }
    }
    *acc = sum;
}

enum class Loop { narrow, wide, approx };

template <unsigned kF, typename T>
FG_AVX512 void levels(const float* x, const std::uint16_t* h, std::size_t n, std::size_t base,
                      const Consts16& k, Loop loop, T* out, const QuantOut& o, __m512* acc) {
    if constexpr (sizeof(T) == 4) {
        if (loop == Loop::wide) return wide_loop<kF>(x, h, n, base, k, out, o, acc);
    }
    if constexpr ((kF & kFold) != 0) {
        if (loop == Loop::approx) return float_loop<kF>(x, h, n, base, k, out, o, acc);
    }
    narrow_loop<kF>(x, h, n, base, k, out, o, acc);
}

// Whole batches: 16 ChaCha20 blocks from block counter + i / 32 into a 1 KiB buffer that never
// leaves L1, then their 512 elements. The double rounds have no memory accesses of their own, so
// they carry the prefetches of the input and output kAhead elements on, as far as x and out
// extend (`extent` elements from x[0]).
template <unsigned kF, typename T>
FG_AVX512 std::size_t fused(const float* x, std::size_t n, std::size_t extent,
                            const ChachaKey& key, std::uint32_t counter, const Consts16& k,
                            Loop loop, T* out, const QuantOut& o, __m512* acc) {
    const avx512::State16 state = avx512::state16(key);
    alignas(64) std::uint16_t h[kBatch];
    std::size_t i = 0;
    for (; i + kBatch <= n; i += kBatch) {
        const bool ahead = i + kAhead + kBatch <= extent;
        const char* in_ahead = reinterpret_cast<const char*>(x + (ahead ? i + kAhead : 0));
        const char* out_ahead = reinterpret_cast<const char*>(out + (ahead ? i + kAhead : 0));
        const auto prefetch = [&](int r) __attribute__((always_inline)) {
            // 8 rounds x 256 bytes: the 2 KiB of float32 input of one batch (and its output).
            if (r >= 8 || !ahead) return;
            for (int l = 0; l < 4; ++l) _mm_prefetch(in_ahead + 256 * r + 64 * l, _MM_HINT_T1);
            for (unsigned l = 0; l < sizeof(T); ++l) {
                __builtin_prefetch(out_ahead + 64 * (sizeof(T) * r + l), 1, 2);
            }
        };
        avx512::blocks16(state, counter + static_cast<std::uint32_t>(i / 32),
                         reinterpret_cast<std::uint8_t*>(h), prefetch);
        levels<kF>(x + i, h, kBatch, i, k, loop, out + i, o, acc);
    }
    return i;
}

FG_AVX512 inline bool any_nonfinite(__m512 acc) {
    const __m512i z = _mm512_castps_si512(_mm512_sub_ps(acc, acc));  // 0 for finite, NaN else
    return _mm512_test_epi32_mask(z, z) != 0;
}

// Draws from the key (whole batches from block `counter`, prefetching within `extent`) or, with
// key == nullptr, from h (x[0, n) in steps of 32). Returns how many elements were done.
struct Draws {
    const std::uint16_t* h;
    const ChachaKey* key;
    std::uint32_t counter;
    std::size_t extent;
};

template <unsigned kF, typename T>
FG_AVX512 std::size_t variant(const float* x, std::size_t n, const Draws& d, const QuantConsts& c,
                              T* out, const QuantOut& o) {
    const Consts16 k = consts16<kF>(c);
    // The float32 first pass needs the clip range of kFold (see approx16).
    const Loop loop = c.top > 65535.0                       ? Loop::wide
                      : c.top <= 255.0 && (kF & kFold) != 0 ? Loop::approx
                                                            : Loop::narrow;
    __m512 acc = _mm512_setzero_ps();
    std::size_t done;
    if (d.key != nullptr) {
        done = fused<kF>(x, n, d.extent, *d.key, d.counter, k, loop, out, o, &acc);
    } else {
        done = n & ~std::size_t{31};
        levels<kF>(x, d.h, done, 0, k, loop, out, o, &acc);
    }
    if (any_nonfinite(acc)) *o.bad = true;
    return done;
}

template <typename T>
using VariantFn = std::size_t (*)(const float*, std::size_t, const Draws&, const QuantConsts&, T*,
                                  const QuantOut&);

template <typename T, unsigned... kV>
constexpr std::array<VariantFn<T>, sizeof...(kV)> variants(std::integer_sequence<unsigned, kV...>) {
    return {&variant<kV, T>...};
}

template <typename T>
std::size_t dispatch(const float* x, std::size_t n, const Draws& d, const QuantConsts& c, T* out,
                     const QuantOut& o) {
    static constexpr auto table = variants<T>(std::make_integer_sequence<unsigned, 8>{});
    const bool fold = c.clip >= 0x1p-60 && c.clip <= 0x1p60;
    const bool float_clamp = static_cast<double>(static_cast<float>(c.clip)) == c.clip;
    const bool no_top = (2.0 * c.clip) * c.scale <= c.top;
    const unsigned v = (fold ? kFold : 0u) | (float_clamp ? kFloatClamp : 0u);
    return table[v | (no_top ? kNoTop : 0u)](x, n, d, c, out, o);
}

}  // namespace

std::size_t quantize_avx512_u16(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint16_t* out, const QuantOut& o) {
    return dispatch(x, n, Draws{h, nullptr, 0, n}, c, out, o);
}
std::size_t quantize_avx512_u32(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint32_t* out, const QuantOut& o) {
    return dispatch(x, n, Draws{h, nullptr, 0, n}, c, out, o);
}
std::size_t quantize_avx512_fused_u16(const float* x, std::size_t n, std::size_t extent,
                                      const ChachaKey& key, std::uint32_t counter,
                                      const QuantConsts& c, std::uint16_t* out, const QuantOut& o) {
    return dispatch(x, n, Draws{nullptr, &key, counter, extent}, c, out, o);
}
std::size_t quantize_avx512_fused_u32(const float* x, std::size_t n, std::size_t extent,
                                      const ChachaKey& key, std::uint32_t counter,
                                      const QuantConsts& c, std::uint32_t* out, const QuantOut& o) {
    return dispatch(x, n, Draws{nullptr, &key, counter, extent}, c, out, o);
}

}  // namespace fedgate::detail
#endif  // __x86_64__
