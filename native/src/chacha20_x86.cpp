// ChaCha20 on x86-64 with 8 (AVX2) or 16 (AVX-512, chacha20_avx512.hpp) blocks in flight: vector i
// holds state word i of every block, so a double round is plain lane-wise arithmetic; a transpose
// serializes the blocks.
// Compiled with per-function target attributes, never with -march, and called only after
// fedgate::simd_level() said the CPU has the instructions.
#include "fedgate/chacha20.hpp"

#if defined(__x86_64__)
// GCC 12 flags its own _mm512_undefined_epi32() inside the AVX-512 intrinsics as uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "chacha20_avx512.hpp"

namespace fedgate::detail {
namespace {

constexpr std::uint32_t kSigma[4] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u};

#define FG_AVX2 __attribute__((target("avx2")))

FG_AVX2 inline __m256i rotl_avx2(__m256i v, int c) {
    return _mm256_or_si256(_mm256_slli_epi32(v, c), _mm256_srli_epi32(v, 32 - c));
}

FG_AVX2 inline void quarter_avx2(__m256i& a, __m256i& b, __m256i& c, __m256i& d, __m256i r16,
                                 __m256i r8) {
    a = _mm256_add_epi32(a, b); d = _mm256_shuffle_epi8(_mm256_xor_si256(d, a), r16);
    c = _mm256_add_epi32(c, d); b = rotl_avx2(_mm256_xor_si256(b, c), 12);
    a = _mm256_add_epi32(a, b); d = _mm256_shuffle_epi8(_mm256_xor_si256(d, a), r8);
    c = _mm256_add_epi32(c, d); b = rotl_avx2(_mm256_xor_si256(b, c), 7);
}

// Transposes eight word vectors (words w..w+7 of blocks 0..7) and stores 32 bytes per block.
FG_AVX2 inline void store8_avx2(const __m256i* a, std::uint8_t* out) {
    const __m256i t0 = _mm256_unpacklo_epi32(a[0], a[1]), t1 = _mm256_unpackhi_epi32(a[0], a[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(a[2], a[3]), t3 = _mm256_unpackhi_epi32(a[2], a[3]);
    const __m256i t4 = _mm256_unpacklo_epi32(a[4], a[5]), t5 = _mm256_unpackhi_epi32(a[4], a[5]);
    const __m256i t6 = _mm256_unpacklo_epi32(a[6], a[7]), t7 = _mm256_unpackhi_epi32(a[6], a[7]);
    const __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    const __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    const __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    const __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    const __m256i lo[4] = {u0, u1, u2, u3}, hi[4] = {u4, u5, u6, u7};
    for (int j = 0; j < 4; ++j) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * j),
                            _mm256_permute2x128_si256(lo[j], hi[j], 0x20));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * (j + 4)),
                            _mm256_permute2x128_si256(lo[j], hi[j], 0x31));
    }
}

}  // namespace

FG_AVX2 std::size_t chacha20_blocks_avx2(const ChachaKey& k, std::uint32_t counter,
                                         std::size_t nblocks, std::uint8_t* out) {
    const __m256i r16 = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13,
                                         2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
    const __m256i r8 = _mm256_setr_epi8(3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14,
                                        3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14);
    __m256i in[16];
    for (int i = 0; i < 4; ++i) in[i] = _mm256_set1_epi32(static_cast<int>(kSigma[i]));
    for (int i = 0; i < 8; ++i) in[4 + i] = _mm256_set1_epi32(static_cast<int>(k.key[i]));
    for (int i = 0; i < 3; ++i) in[13 + i] = _mm256_set1_epi32(static_cast<int>(k.nonce[i]));
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    std::size_t done = 0;
    for (; done + 8 <= nblocks; done += 8, out += 8 * kChachaBlockBytes) {
        in[12] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(counter + done)), lanes);
        __m256i x[16];
        for (int i = 0; i < 16; ++i) x[i] = in[i];
        for (int r = 0; r < 10; ++r) {
            quarter_avx2(x[0], x[4], x[8], x[12], r16, r8);
            quarter_avx2(x[1], x[5], x[9], x[13], r16, r8);
            quarter_avx2(x[2], x[6], x[10], x[14], r16, r8);
            quarter_avx2(x[3], x[7], x[11], x[15], r16, r8);
            quarter_avx2(x[0], x[5], x[10], x[15], r16, r8);
            quarter_avx2(x[1], x[6], x[11], x[12], r16, r8);
            quarter_avx2(x[2], x[7], x[8], x[13], r16, r8);
            quarter_avx2(x[3], x[4], x[9], x[14], r16, r8);
        }
        for (int i = 0; i < 16; ++i) x[i] = _mm256_add_epi32(x[i], in[i]);
        store8_avx2(x, out);
        store8_avx2(x + 8, out + 32);
    }
    return done;
}

// The double rounds prefetch the output 32 blocks (2 KiB) ahead for writing, as far as out
// extends: expand writes straight into an output vector that is usually not in cache, and the
// rounds have no memory accesses of their own to hide the misses behind.
FG_CHACHA_AVX512 std::size_t chacha20_blocks_avx512(const ChachaKey& k, std::uint32_t counter,
                                                    std::size_t nblocks, std::uint8_t* out) {
    constexpr std::size_t kAhead = 32;
    const avx512::State16 state = avx512::state16(k);
    std::size_t done = 0;
    for (; done + 16 <= nblocks; done += 16, out += 16 * kChachaBlockBytes) {
        const bool ahead = done + 16 + kAhead <= nblocks;
        const std::uint8_t* const next = out + (ahead ? kAhead * kChachaBlockBytes : 0);
        const auto prefetch = [&](int r) __attribute__((always_inline)) {
            if (r >= 8 || !ahead) return;  // 8 rounds x 128 bytes: the next 16 blocks
            __builtin_prefetch(next + 128 * r, 1, 3);
            __builtin_prefetch(next + 128 * r + 64, 1, 3);
        };
        avx512::blocks16(state, counter + static_cast<std::uint32_t>(done), out, prefetch);
    }
    return done;
}

}  // namespace fedgate::detail
#endif  // __x86_64__
