// Vector versions of the quantize loop in quant.cpp: the same IEEE double operations in the same
// order, 4 (AVX2) or 8 (AVX-512) lanes at a time. Ties (h == g) are only recorded here; the caller
// settles them with the scalar code.
#include "fedgate/quant.hpp"

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace fedgate::detail {
namespace {

#define FG_AVX2 __attribute__((target("avx2")))
#define FG_AVX512 __attribute__((target("avx512f,avx512bw")))

// The constants as vectors in locals: read through the QuantConsts reference, -fno-strict-aliasing
// would make the compiler reload them after every store to `out`.
struct Consts4 {
    __m256d lo, hi, scale, top, two16, two31;
};
struct Consts8 {
    __m512d lo, hi, scale, top, two16;
};

inline void push_ties(unsigned mask, std::size_t base, const QuantOut& o) {
    while (mask != 0) {
        o.ties[(*o.n_ties)++] = static_cast<std::uint32_t>(base + __builtin_ctz(mask));
        mask &= mask - 1;
    }
}

// Four elements: returns the levels f + (h < g) as uint32 lanes and the lanes with h == g as all
// ones in *tie, and ORs x - x (zero bits only for finite x) into *nonfinite. g < 2^16 and h are
// compared as int32: g is exact, so trunc(t) == g and the comparison equals the double one.
FG_AVX2 inline __m128i quant4_avx2(const float* x, const std::uint16_t* h, const Consts4& k,
                                   __m256d* nonfinite, __m128i* tie) {
    const __m128i sign = _mm_set1_epi32(static_cast<int>(0x80000000u));
    const __m256d xd = _mm256_cvtps_pd(_mm_loadu_ps(x));
    *nonfinite = _mm256_or_pd(*nonfinite, _mm256_sub_pd(xd, xd));
    const __m256d cl = _mm256_min_pd(_mm256_max_pd(xd, k.lo), k.hi);
    const __m256d v = _mm256_min_pd(_mm256_mul_pd(_mm256_add_pd(cl, k.hi), k.scale), k.top);
    const __m256d f = _mm256_floor_pd(v);
    const __m128i g = _mm256_cvttpd_epi32(_mm256_mul_pd(_mm256_sub_pd(v, f), k.two16));
    const __m128i h4 = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(h)));
    *tie = _mm_cmpeq_epi32(g, h4);
    // double -> uint32 without AVX-512: subtract 2^31, convert as int32, flip the sign bit back;
    // then subtracting the all-ones lanes of (g > h) adds one.
    const __m128i fi = _mm_xor_si128(_mm256_cvttpd_epi32(_mm256_sub_pd(f, k.two31)), sign);
    return _mm_sub_epi32(fi, _mm_cmpgt_epi32(g, h4));
}

template <typename T>
FG_AVX2 std::size_t quantize_avx2(const float* x, const std::uint16_t* h, std::size_t n,
                                  const QuantConsts& c, T* out, const QuantOut& o) {
    const Consts4 k{_mm256_set1_pd(-c.clip), _mm256_set1_pd(c.clip), _mm256_set1_pd(c.scale),
                    _mm256_set1_pd(c.top),   _mm256_set1_pd(65536.0), _mm256_set1_pd(2147483648.0)};
    __m256d nonfinite = _mm256_setzero_pd();
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        _mm_prefetch(reinterpret_cast<const char*>(x + i + kQuantChunk), _MM_HINT_T1);
        __m128i t0, t1;
        const __m128i q0 = quant4_avx2(x + i, h + i, k, &nonfinite, &t0);
        const __m128i q1 = quant4_avx2(x + i + 4, h + i + 4, k, &nonfinite, &t1);
        if constexpr (sizeof(T) == 2) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi32(q0, q1));
        } else {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), q0);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 4), q1);
        }
        const __m128i t01 = _mm_or_si128(t0, t1);
        if (__builtin_expect(!_mm_testz_si128(t01, t01), 0)) {
            push_ties(static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(t0)) |
                                            (_mm_movemask_ps(_mm_castsi128_ps(t1)) << 4)),
                      i, o);
        }
    }
    const __m256i nf = _mm256_castpd_si256(nonfinite);
    if (!_mm256_testz_si256(nf, nf)) *o.bad = true;
    return i;
}

// Eight elements as uint32 lanes (h8: their uint16 words widened to int32), the lanes with
// h == g as all ones in *tie; g and h compared as int32 as in quant4_avx2. `cl` is x already
// clamped to [-clip, clip]. kNoTop: min(v, top) is known to be a no-op (see quantize_avx512).
template <bool kNoTop>
FG_AVX512 inline __m256i quant8_avx512(__m512d cl, __m256i h8, const Consts8& k, __m256i* tie) {
    __m512d v = _mm512_mul_pd(_mm512_add_pd(cl, k.hi), k.scale);
    if constexpr (!kNoTop) v = _mm512_min_pd(v, k.top);
    const __m512d f = _mm512_roundscale_pd(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256i g = _mm512_cvttpd_epi32(_mm512_mul_pd(_mm512_sub_pd(v, f), k.two16));
    *tie = _mm256_cmpeq_epi32(g, h8);
    return _mm256_sub_epi32(_mm512_cvttpd_epu32(f), _mm256_cmpgt_epi32(g, h8));
}

// kFloatClamp: clip is a float32, so clamping the float32 x to [-clip, clip] equals clamping its
// double (both compares are exact), on 16 lanes at once.
template <bool kFloatClamp, bool kNoTop, typename T>
FG_AVX512 std::size_t quantize_avx512_loop(const float* x, const std::uint16_t* h, std::size_t n,
                                           const QuantConsts& c, T* out, const QuantOut& o) {
    const Consts8 k{_mm512_set1_pd(-c.clip), _mm512_set1_pd(c.clip), _mm512_set1_pd(c.scale),
                    _mm512_set1_pd(c.top),   _mm512_set1_pd(65536.0)};
    const __m512 lo32 = _mm512_set1_ps(static_cast<float>(-c.clip));
    const __m512 hi32 = _mm512_set1_ps(static_cast<float>(c.clip));
    __m512i nonfinite = _mm512_setzero_si512();
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 xf = _mm512_loadu_ps(x + i);
        _mm_prefetch(reinterpret_cast<const char*>(x + i + kQuantChunk), _MM_HINT_T1);
        nonfinite = _mm512_or_si512(nonfinite, _mm512_castps_si512(_mm512_sub_ps(xf, xf)));
        __m512d cl0, cl1;
        if constexpr (kFloatClamp) {
            xf = _mm512_min_ps(_mm512_max_ps(xf, lo32), hi32);
            cl0 = _mm512_cvtps_pd(_mm512_castps512_ps256(xf));
            cl1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1)));
        } else {
            cl0 = _mm512_min_pd(_mm512_max_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(xf)), k.lo), k.hi);
            cl1 = _mm512_min_pd(
                _mm512_max_pd(_mm512_cvtps_pd(_mm256_castpd_ps(
                                  _mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1))),
                              k.lo),
                k.hi);
        }
        const __m256i h0 = _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
        const __m256i h1 = _mm256_cvtepu16_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i + 8)));
        __m256i t0, t1;
        const __m256i q0 = quant8_avx512<kNoTop>(cl0, h0, k, &t0);
        const __m256i q1 = quant8_avx512<kNoTop>(cl1, h1, k, &t1);
        if constexpr (sizeof(T) == 2) {
            // packus interleaves 128-bit lanes; the permute puts the eight pairs back in order.
            const __m256i packed = _mm256_packus_epi32(q0, q1);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                                _mm256_permute4x64_epi64(packed, 0xD8));
        } else {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), q0);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i + 8), q1);
        }
        const __m256i t01 = _mm256_or_si256(t0, t1);
        if (__builtin_expect(!_mm256_testz_si256(t01, t01), 0)) {
            push_ties(static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(t0)) |
                                            (_mm256_movemask_ps(_mm256_castsi256_ps(t1)) << 8)),
                      i, o);
        }
    }
    if (_mm512_test_epi64_mask(nonfinite, nonfinite) != 0) *o.bad = true;
    return i;
}

template <typename T>
std::size_t quantize_avx512(const float* x, const std::uint16_t* h, std::size_t n,
                            const QuantConsts& c, T* out, const QuantOut& o) {
    // Exact specialisations of the same arithmetic. v = fl(fl(c + clip) * scale) is monotone in c
    // and c + clip <= 2 clip, so when fl(2 clip * scale) <= top the clamp to top never acts.
    const bool float_clamp = static_cast<double>(static_cast<float>(c.clip)) == c.clip;
    const bool no_top = (2.0 * c.clip) * c.scale <= c.top;
    if (float_clamp && no_top) return quantize_avx512_loop<true, true>(x, h, n, c, out, o);
    if (float_clamp) return quantize_avx512_loop<true, false>(x, h, n, c, out, o);
    if (no_top) return quantize_avx512_loop<false, true>(x, h, n, c, out, o);
    return quantize_avx512_loop<false, false>(x, h, n, c, out, o);
}

}  // namespace

std::size_t quantize_avx2_u16(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint16_t* out, const QuantOut& o) {
    return quantize_avx2(x, h, n, c, out, o);
}
std::size_t quantize_avx2_u32(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint32_t* out, const QuantOut& o) {
    return quantize_avx2(x, h, n, c, out, o);
}
std::size_t quantize_avx512_u16(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint16_t* out, const QuantOut& o) {
    return quantize_avx512(x, h, n, c, out, o);
}
std::size_t quantize_avx512_u32(const float* x, const std::uint16_t* h, std::size_t n,
                                const QuantConsts& c, std::uint32_t* out, const QuantOut& o) {
    return quantize_avx512(x, h, n, c, out, o);
}

}  // namespace fedgate::detail
#endif  // __x86_64__
