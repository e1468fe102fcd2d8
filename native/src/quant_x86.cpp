// The AVX2 version of the quantize loop in quant.cpp: the same IEEE double operations in the same
// order, 4 lanes at a time (AVX-512: quant_avx512.cpp). Ties (h == g) are only recorded here; the
// caller settles them with the scalar code.
#include "fedgate/quant.hpp"

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace fedgate::detail {
namespace {

#define FG_AVX2 __attribute__((target("avx2")))

// The constants as vectors in locals: read through the QuantConsts reference, -fno-strict-aliasing
// would make the compiler reload them after every store to `out`.
struct Consts4 {
    __m256d lo, hi, scale, top, two16, two31;
};

inline void push_ties(unsigned mask, std::size_t base, const QuantOut& o) {
    while (mask != 0) {
        o.ties[(*o.n_ties)++] = static_cast<std::uint32_t>(o.offset + base + __builtin_ctz(mask));
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

}  // namespace

std::size_t quantize_avx2_u16(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint16_t* out, const QuantOut& o) {
    return quantize_avx2(x, h, n, c, out, o);
}
std::size_t quantize_avx2_u32(const float* x, const std::uint16_t* h, std::size_t n,
                              const QuantConsts& c, std::uint32_t* out, const QuantOut& o) {
    return quantize_avx2(x, h, n, c, out, o);
}

}  // namespace fedgate::detail
#endif  // __x86_64__
