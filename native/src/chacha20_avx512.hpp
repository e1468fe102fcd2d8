// ChaCha20 on 16 blocks at once with AVX-512: vector i holds state word i of every block, so a
// double round is plain lane-wise arithmetic and a transpose serializes the blocks. Private to
// chacha20_x86.cpp (the keystream) and quant_avx512.cpp (which consumes it without leaving L1).
// Include only from x86-64 sources; the functions carry their own target attribute.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "fedgate/chacha20.hpp"

// prfchw: PREFETCHW, which every CPU with AVX-512BW has.
#define FG_CHACHA_AVX512 __attribute__((target("avx512f,avx512bw,prfchw")))

namespace fedgate::detail::avx512 {

// The input state of 16 consecutive blocks, counter lanes c, c + 1, ..., c + 15.
struct State16 {
    __m512i in[16];
};

FG_CHACHA_AVX512 inline State16 state16(const ChachaKey& k) {
    constexpr std::uint32_t kSigma[4] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u};
    State16 s;
    for (int i = 0; i < 4; ++i) s.in[i] = _mm512_set1_epi32(static_cast<int>(kSigma[i]));
    for (int i = 0; i < 8; ++i) s.in[4 + i] = _mm512_set1_epi32(static_cast<int>(k.key[i]));
    s.in[12] = _mm512_setzero_si512();
    for (int i = 0; i < 3; ++i) s.in[13 + i] = _mm512_set1_epi32(static_cast<int>(k.nonce[i]));
    return s;
}

FG_CHACHA_AVX512 inline void quarter(__m512i& a, __m512i& b, __m512i& c, __m512i& d) {
    a = _mm512_add_epi32(a, b); d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 16);
    c = _mm512_add_epi32(c, d); b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 12);
    a = _mm512_add_epi32(a, b); d = _mm512_rol_epi32(_mm512_xor_si512(d, a), 8);
    c = _mm512_add_epi32(c, d); b = _mm512_rol_epi32(_mm512_xor_si512(b, c), 7);
}

// Words 4g..4g+3 of all 16 blocks -> per block j (of each 128-bit lane L: block 4L+j) one 16-byte
// row; then a 4x4 transpose of 128-bit lanes gathers the four rows of one block.
FG_CHACHA_AVX512 inline void store16(const __m512i* x, std::uint8_t* out) {
    __m512i y[4][4];  // y[g][j]: lane L = words 4g..4g+3 of block 4L+j
    for (int g = 0; g < 4; ++g) {
        const __m512i* a = x + 4 * g;
        const __m512i t0 = _mm512_unpacklo_epi32(a[0], a[1]), t1 = _mm512_unpackhi_epi32(a[0], a[1]);
        const __m512i t2 = _mm512_unpacklo_epi32(a[2], a[3]), t3 = _mm512_unpackhi_epi32(a[2], a[3]);
        y[g][0] = _mm512_unpacklo_epi64(t0, t2);
        y[g][1] = _mm512_unpackhi_epi64(t0, t2);
        y[g][2] = _mm512_unpacklo_epi64(t1, t3);
        y[g][3] = _mm512_unpackhi_epi64(t1, t3);
    }
    for (int j = 0; j < 4; ++j) {
        const __m512i s0 = _mm512_shuffle_i32x4(y[0][j], y[1][j], 0x44);
        const __m512i s1 = _mm512_shuffle_i32x4(y[0][j], y[1][j], 0xEE);
        const __m512i s2 = _mm512_shuffle_i32x4(y[2][j], y[3][j], 0x44);
        const __m512i s3 = _mm512_shuffle_i32x4(y[2][j], y[3][j], 0xEE);
        _mm512_storeu_si512(out + 64 * (0 + j), _mm512_shuffle_i32x4(s0, s2, 0x88));
        _mm512_storeu_si512(out + 64 * (4 + j), _mm512_shuffle_i32x4(s0, s2, 0xDD));
        _mm512_storeu_si512(out + 64 * (8 + j), _mm512_shuffle_i32x4(s1, s3, 0x88));
        _mm512_storeu_si512(out + 64 * (12 + j), _mm512_shuffle_i32x4(s1, s3, 0xDD));
    }
}

// Blocks counter .. counter + 15, serialized to out (1 KiB). `between` runs once per double round
// (after the column and before the diagonal quarter rounds): a caller puts memory work there, such
// as prefetches, which the long arithmetic-only stretch would otherwise leave waiting. Mark it
// always_inline: GCC deems a callee that only prefetches free of effects and drops the call.
template <typename Between>
FG_CHACHA_AVX512 inline void blocks16(const State16& s, std::uint32_t counter, std::uint8_t* out,
                                      Between&& between) {
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i ctr = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(counter)), lanes);
    __m512i x[16];
    for (int i = 0; i < 16; ++i) x[i] = s.in[i];
    x[12] = ctr;
    for (int r = 0; r < 10; ++r) {
        quarter(x[0], x[4], x[8], x[12]);
        quarter(x[1], x[5], x[9], x[13]);
        quarter(x[2], x[6], x[10], x[14]);
        quarter(x[3], x[7], x[11], x[15]);
        between(r);
        quarter(x[0], x[5], x[10], x[15]);
        quarter(x[1], x[6], x[11], x[12]);
        quarter(x[2], x[7], x[8], x[13]);
        quarter(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; ++i) x[i] = _mm512_add_epi32(x[i], s.in[i]);
    x[12] = _mm512_add_epi32(x[12], ctr);  // s.in[12] is zero: the counter lanes are added here
    store16(x, out);
}

}  // namespace fedgate::detail::avx512
