// Vector versions of the quantize loop in quant.cpp: the same IEEE double operations in the same
// order, 4 (AVX2) or 8 (AVX-512) lanes at a time.
#include "fedgate/quant.hpp"

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

namespace fedgate::detail {
namespace {

#define FG_AVX2 __attribute__((target("avx2")))
#define FG_AVX512 __attribute__((target("avx512f,avx512bw")))

// Four elements: returns the quantized levels as uint32 lanes and ORs x - x (zero bits only for
// finite x) into *nonfinite.
FG_AVX2 inline __m128i quant4_avx2(const float* x, const std::uint32_t* w, const QuantConsts& c,
                                   __m256d* nonfinite) {
    const __m128i sign = _mm_set1_epi32(static_cast<int>(0x80000000u));
    const __m256d two31 = _mm256_set1_pd(2147483648.0);
    const __m256d hi = _mm256_set1_pd(c.clip);
    const __m256d xd = _mm256_cvtps_pd(_mm_loadu_ps(x));
    *nonfinite = _mm256_or_pd(*nonfinite, _mm256_sub_pd(xd, xd));
    const __m256d cl = _mm256_min_pd(_mm256_max_pd(xd, _mm256_set1_pd(-c.clip)), hi);
    const __m256d v = _mm256_min_pd(_mm256_mul_pd(_mm256_add_pd(cl, hi), _mm256_set1_pd(c.scale)),
                                    _mm256_set1_pd(c.top));
    const __m256d f = _mm256_floor_pd(v);
    // uint32 -> double without AVX-512: flip the sign bit, convert as int32, add 2^31 back (exact).
    const __m128i wi = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    const __m256d wd = _mm256_add_pd(_mm256_cvtepi32_pd(_mm_xor_si128(wi, sign)), two31);
    const __m256d u = _mm256_mul_pd(wd, _mm256_set1_pd(0x1p-32));
    const __m256d up = _mm256_cmp_pd(u, _mm256_sub_pd(v, f), _CMP_LT_OQ);
    const __m256d q = _mm256_add_pd(f, _mm256_and_pd(up, _mm256_set1_pd(1.0)));
    return _mm_xor_si128(_mm256_cvttpd_epi32(_mm256_sub_pd(q, two31)), sign);
}

template <typename T>
FG_AVX2 std::size_t quantize_avx2(const float* x, const std::uint32_t* w, std::size_t n,
                                  const QuantConsts& c, T* out, bool* bad) {
    __m256d nonfinite = _mm256_setzero_pd();
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m128i q0 = quant4_avx2(x + i, w + i, c, &nonfinite);
        const __m128i q1 = quant4_avx2(x + i + 4, w + i + 4, c, &nonfinite);
        if constexpr (sizeof(T) == 2) {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm_packus_epi32(q0, q1));
        } else {
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), q0);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 4), q1);
        }
    }
    const __m256i nf = _mm256_castpd_si256(nonfinite);
    if (!_mm256_testz_si256(nf, nf)) *bad = true;
    return i;
}

// Eight elements as uint32 lanes; the non-finite check runs on the float32 vectors in the caller.
FG_AVX512 inline __m256i quant8_avx512(__m256 xf, const std::uint32_t* w, const QuantConsts& c) {
    const __m512d hi = _mm512_set1_pd(c.clip);
    const __m512d xd = _mm512_cvtps_pd(xf);
    const __m512d cl = _mm512_min_pd(_mm512_max_pd(xd, _mm512_set1_pd(-c.clip)), hi);
    const __m512d v = _mm512_min_pd(_mm512_mul_pd(_mm512_add_pd(cl, hi), _mm512_set1_pd(c.scale)),
                                    _mm512_set1_pd(c.top));
    const __m512d f = _mm512_roundscale_pd(v, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m256i wi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m512d u = _mm512_mul_pd(_mm512_cvtepu32_pd(wi), _mm512_set1_pd(0x1p-32));
    const __mmask8 up = _mm512_cmp_pd_mask(u, _mm512_sub_pd(v, f), _CMP_LT_OQ);
    const __m512d q = _mm512_mask_add_pd(f, up, f, _mm512_set1_pd(1.0));
    return _mm512_cvttpd_epu32(q);
}

template <typename T>
FG_AVX512 std::size_t quantize_avx512(const float* x, const std::uint32_t* w, std::size_t n,
                                      const QuantConsts& c, T* out, bool* bad) {
    __m512i nonfinite = _mm512_setzero_si512();
    std::size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 xf = _mm512_loadu_ps(x + i);
        nonfinite = _mm512_or_si512(nonfinite, _mm512_castps_si512(_mm512_sub_ps(xf, xf)));
        const __m256i q0 = quant8_avx512(_mm512_castps512_ps256(xf), w + i, c);
        const __m256i q1 = quant8_avx512(
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(xf), 1)), w + i + 8, c);
        if constexpr (sizeof(T) == 2) {
            // packus interleaves 128-bit lanes; the permute puts the eight pairs back in order.
            const __m256i packed = _mm256_packus_epi32(q0, q1);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i),
                                _mm256_permute4x64_epi64(packed, 0xD8));
        } else {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), q0);
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i + 8), q1);
        }
    }
    if (_mm512_test_epi64_mask(nonfinite, nonfinite) != 0) *bad = true;
    return i;
}

}  // namespace

std::size_t quantize_avx2_u16(const float* x, const std::uint32_t* w, std::size_t n,
                              const QuantConsts& c, std::uint16_t* out, bool* bad) {
    return quantize_avx2(x, w, n, c, out, bad);
}
std::size_t quantize_avx2_u32(const float* x, const std::uint32_t* w, std::size_t n,
                              const QuantConsts& c, std::uint32_t* out, bool* bad) {
    return quantize_avx2(x, w, n, c, out, bad);
}
std::size_t quantize_avx512_u16(const float* x, const std::uint32_t* w, std::size_t n,
                                const QuantConsts& c, std::uint16_t* out, bool* bad) {
    return quantize_avx512(x, w, n, c, out, bad);
}
std::size_t quantize_avx512_u32(const float* x, const std::uint32_t* w, std::size_t n,
                                const QuantConsts& c, std::uint32_t* out, bool* bad) {
    return quantize_avx512(x, w, n, c, out, bad);
}

}  // namespace fedgate::detail
#endif  // __x86_64__
