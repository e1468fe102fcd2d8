// AVX2 (8 lanes) and AVX-512 (16 lanes) versions of decode_scalar (dgauss_fast.hpp): the same
// integer operations per lane, one gather of the alias slot per word, and in the same pass the
// sample added to the ring vector or widened and stored (lanes left for the slow path add zero).
// Compiled with per-function target attributes and called only after fedgate::simd_level()
// reported the instructions.
#include "dgauss_fast.hpp"

#if defined(__x86_64__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wpsabi"  // the vector helpers are inlined into same-target callers
#include <immintrin.h>

namespace fedgate::dg {
namespace {

#define FG_AVX2 __attribute__((target("avx2")))
#define FG_AVX512 __attribute__((target("avx512f,avx512bw")))

template <typename T>
std::size_t decode_rest(const FastConsts& k, const std::uint32_t* u, std::size_t from, std::size_t n, T* dst,
                        std::uint32_t mask, std::uint32_t* exc, std::size_t n_exc) {
    const std::size_t more = decode_scalar(k, u + from, n - from, dst + from, mask, exc + n_exc);
    for (std::size_t e = n_exc; e < n_exc + more; ++e) exc[e] += static_cast<std::uint32_t>(from);
    return n_exc + more;
}

// The plan's constants as vectors in locals: read through the FastConsts reference,
// -fno-strict-aliasing would make the compiler reload them after every store to dst.
struct Consts8 {
    __m128i q, p, om;
    __m256i vmask, pmask, wmask, pool, one, zcheck;
    const int* slots;
};

struct Consts16 {
    __m128i q, p, om;
    __m512i vmask, pmask, wmask, pool, one;
    __mmask16 zcheck;
    const std::uint32_t* slots;
};

FG_AVX2 inline Consts8 consts8(const FastConsts& k) {
    return {_mm_cvtsi32_si128(static_cast<int>(k.q)),
            _mm_cvtsi32_si128(static_cast<int>(k.p)),
            _mm_cvtsi32_si128(static_cast<int>(k.omega)),
            _mm256_set1_epi32(static_cast<int>((1u << k.q) - 1)),
            _mm256_set1_epi32(static_cast<int>((1u << k.p) - 1)),
            _mm256_set1_epi32(static_cast<int>((1u << k.omega) - 1)),
            _mm256_set1_epi32(static_cast<int>(k.J)),
            _mm256_set1_epi32(1),
            k.zero_check ? _mm256_set1_epi32(-1) : _mm256_setzero_si256(),
            reinterpret_cast<const int*>(k.slots)};
}

FG_AVX512 inline Consts16 consts16(const FastConsts& k) {
    return {_mm_cvtsi32_si128(static_cast<int>(k.q)),
            _mm_cvtsi32_si128(static_cast<int>(k.p)),
            _mm_cvtsi32_si128(static_cast<int>(k.omega)),
            _mm512_set1_epi32(static_cast<int>((1u << k.q) - 1)),
            _mm512_set1_epi32(static_cast<int>((1u << k.p) - 1)),
            _mm512_set1_epi32(static_cast<int>((1u << k.omega) - 1)),
            _mm512_set1_epi32(static_cast<int>(k.J)),
            _mm512_set1_epi32(1),
            static_cast<__mmask16>(k.zero_check ? 0xffff : 0),
            k.slots};
}

// Eight words: the samples (zero in lanes left for the slow path) and those lanes as all ones.
FG_AVX2 inline __m256i lanes_avx2(const Consts8& c, __m256i w, __m256i* ex) {
    const __m256i zero = _mm256_setzero_si256();
    const __m256i slot = _mm256_srl_epi32(w, c.q);
    const __m256i v = _mm256_and_si256(w, c.vmask);
    const __m256i e = _mm256_i32gather_epi32(c.slots, slot, 4);
    // v / 2 < 2^30 and thr / 2 <= 2^30: the signed comparison is the unsigned one
    const __m256i own = _mm256_cmpgt_epi32(_mm256_srl_epi32(e, c.p), _mm256_srli_epi32(v, 1));
    const __m256i o = _mm256_blendv_epi8(_mm256_and_si256(e, c.pmask), slot, own);
    const __m256i r = _mm256_and_si256(v, c.wmask);
    const __m256i s = _mm256_and_si256(_mm256_srl_epi32(v, c.om), c.one);
    const __m256i m = _mm256_add_epi32(_mm256_sll_epi32(o, c.om), r);
    const __m256i neg = _mm256_sub_epi32(zero, s);
    const __m256i zr = _mm256_and_si256(c.zcheck, _mm256_and_si256(_mm256_cmpeq_epi32(m, zero), neg));
    *ex = _mm256_or_si256(_mm256_cmpeq_epi32(o, c.pool), zr);
    return _mm256_andnot_si256(*ex, _mm256_sub_epi32(_mm256_xor_si256(m, neg), neg));
}

FG_AVX512 inline __m512i lanes_avx512(const Consts16& c, __m512i w, __mmask16* ex) {
    const __m512i zero = _mm512_setzero_si512();
    const __m512i slot = _mm512_srl_epi32(w, c.q);
    const __m512i v = _mm512_and_si512(w, c.vmask);
    const __m512i e = _mm512_i32gather_epi32(slot, c.slots, 4);
    const __mmask16 own = _mm512_cmplt_epu32_mask(_mm512_srli_epi32(v, 1), _mm512_srl_epi32(e, c.p));
    const __m512i o = _mm512_mask_blend_epi32(own, _mm512_and_si512(e, c.pmask), slot);
    const __m512i r = _mm512_and_si512(v, c.wmask);
    const __m512i s = _mm512_and_si512(_mm512_srl_epi32(v, c.om), c.one);
    const __m512i m = _mm512_add_epi32(_mm512_sll_epi32(o, c.om), r);
    const __m512i neg = _mm512_sub_epi32(zero, s);
    const __mmask16 zr = c.zcheck & _mm512_cmpeq_epi32_mask(m, zero) & _mm512_test_epi32_mask(s, s);
    *ex = _mm512_cmpeq_epi32_mask(o, c.pool) | zr;
    const __m512i x = _mm512_sub_epi32(_mm512_xor_si512(m, neg), neg);
    return _mm512_maskz_mov_epi32(static_cast<__mmask16>(~*ex), x);
}

inline std::size_t push_lanes(unsigned bits, std::size_t base, std::uint32_t* exc, std::size_t n_exc) {
    while (bits != 0) {
        exc[n_exc++] = static_cast<std::uint32_t>(base + static_cast<unsigned>(__builtin_ctz(bits)));
        bits &= bits - 1;
    }
    return n_exc;
}

// The attributed templates have no earlier declaration without the attribute, so GCC compiles
// their instantiations for the target; the entry points of dgauss_fast.hpp forward to them.
template <typename T>
FG_AVX2 std::size_t avx2_impl(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst,
                              std::uint32_t mask, std::uint32_t* exc) {
    const Consts8 c = consts8(k);
    const __m256i vmask = _mm256_set1_epi32(static_cast<int>(mask));
    std::size_t n_exc = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i ex;
        const __m256i x = lanes_avx2(c, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(u + i)), &ex);
        if constexpr (std::is_signed_v<T>) {
            auto* o = reinterpret_cast<__m256i*>(dst + i);
            _mm256_storeu_si256(o, _mm256_cvtepi32_epi64(_mm256_castsi256_si128(x)));
            _mm256_storeu_si256(o + 1, _mm256_cvtepi32_epi64(_mm256_extracti128_si256(x, 1)));
        } else if constexpr (sizeof(T) == 4) {
            auto* a = reinterpret_cast<__m256i*>(dst + i);
            _mm256_storeu_si256(a, _mm256_and_si256(_mm256_add_epi32(_mm256_loadu_si256(a), x), vmask));
        } else {
            auto* a = reinterpret_cast<__m128i*>(dst + i);
            const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(a));
            const __m256i sum = _mm256_and_si256(_mm256_add_epi32(wide, x), vmask);
            const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(sum, sum), 0x08);
            _mm_storeu_si128(a, _mm256_castsi256_si128(packed));
        }
        if (__builtin_expect(!_mm256_testz_si256(ex, ex), 0)) {
            const auto bits = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(ex)));
            n_exc = push_lanes(bits, i, exc, n_exc);
        }
    }
    return decode_rest(k, u, i, n, dst, mask, exc, n_exc);
}

template <typename T>
FG_AVX512 std::size_t avx512_impl(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst,
                                  std::uint32_t mask, std::uint32_t* exc) {
    const Consts16 c = consts16(k);
    const __m512i vmask = _mm512_set1_epi32(static_cast<int>(mask));
    std::size_t n_exc = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        __mmask16 ex = 0;
        const __m512i x = lanes_avx512(c, _mm512_loadu_si512(u + i), &ex);
        if constexpr (std::is_signed_v<T>) {
            _mm512_storeu_si512(dst + i, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(x)));
            _mm512_storeu_si512(dst + i + 8, _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(x, 1)));
        } else if constexpr (sizeof(T) == 4) {
            const __m512i sum = _mm512_add_epi32(_mm512_loadu_si512(dst + i), x);
            _mm512_storeu_si512(dst + i, _mm512_and_si512(sum, vmask));
        } else {
            auto* a = reinterpret_cast<__m256i*>(dst + i);
            const __m512i wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(a));
            const __m512i sum = _mm512_and_si512(_mm512_add_epi32(wide, x), vmask);
            _mm256_storeu_si256(a, _mm512_cvtepi32_epi16(sum));
        }
        if (__builtin_expect(ex != 0, 0)) n_exc = push_lanes(ex, i, exc, n_exc);  // rare: a few per 1000
    }
    return decode_rest(k, u, i, n, dst, mask, exc, n_exc);
}

}  // namespace

template <typename T>
std::size_t decode_avx2(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst, std::uint32_t mask,
                        std::uint32_t* exc) {
    return avx2_impl(k, u, n, dst, mask, exc);
}

template <typename T>
std::size_t decode_avx512(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst,
                          std::uint32_t mask, std::uint32_t* exc) {
    return avx512_impl(k, u, n, dst, mask, exc);
}

}  // namespace fedgate::dg

#else  // not x86-64: never called (simd_level() reports no x86 level)

namespace fedgate::dg {

template <typename T>
std::size_t decode_avx2(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst, std::uint32_t mask,
                        std::uint32_t* exc) {
    return decode_scalar(k, u, n, dst, mask, exc);
}
template <typename T>
std::size_t decode_avx512(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst,
                          std::uint32_t mask, std::uint32_t* exc) {
    return decode_scalar(k, u, n, dst, mask, exc);
}

}  // namespace fedgate::dg

#endif

namespace fedgate::dg {

#define FG_INSTANTIATE(T)                                                                            \
    template std::size_t decode_avx2<T>(const FastConsts&, const std::uint32_t*, std::size_t, T*,   \
                                        std::uint32_t, std::uint32_t*);                            \
    template std::size_t decode_avx512<T>(const FastConsts&, const std::uint32_t*, std::size_t, T*, \
                                          std::uint32_t, std::uint32_t*);
FG_INSTANTIATE(std::int64_t)
FG_INSTANTIATE(std::uint16_t)
FG_INSTANTIATE(std::uint32_t)
#undef FG_INSTANTIATE

}  // namespace fedgate::dg
