// ChaCha20 on AArch64 with 4 blocks in flight (Advanced SIMD is part of the AArch64 baseline, so no
// target attribute is needed). Same layout as the x86 paths: vector i holds word i of four blocks.
#include "fedgate/chacha20.hpp"

#if defined(__aarch64__)
#include <arm_neon.h>

namespace fedgate::detail {
namespace {

template <int C>
inline uint32x4_t rotl_neon(uint32x4_t v) {
    return vsriq_n_u32(vshlq_n_u32(v, C), v, 32 - C);
}

inline void quarter_neon(uint32x4_t& a, uint32x4_t& b, uint32x4_t& c, uint32x4_t& d) {
    a = vaddq_u32(a, b); d = vreinterpretq_u32_u16(vrev32q_u16(vreinterpretq_u16_u32(veorq_u32(d, a))));
    c = vaddq_u32(c, d); b = rotl_neon<12>(veorq_u32(b, c));
    a = vaddq_u32(a, b); d = rotl_neon<8>(veorq_u32(d, a));
    c = vaddq_u32(c, d); b = rotl_neon<7>(veorq_u32(b, c));
}

// Words 4g..4g+3 of blocks 0..3 -> one 16-byte row per block.
inline void store4_neon(const uint32x4_t* a, std::uint8_t* out) {
    const uint32x4x2_t t01 = vtrnq_u32(a[0], a[1]);
    const uint32x4x2_t t23 = vtrnq_u32(a[2], a[3]);
    vst1q_u8(out + 0, vreinterpretq_u8_u32(vcombine_u32(vget_low_u32(t01.val[0]), vget_low_u32(t23.val[0]))));
    vst1q_u8(out + 64, vreinterpretq_u8_u32(vcombine_u32(vget_low_u32(t01.val[1]), vget_low_u32(t23.val[1]))));
    vst1q_u8(out + 128, vreinterpretq_u8_u32(vcombine_u32(vget_high_u32(t01.val[0]), vget_high_u32(t23.val[0]))));
    vst1q_u8(out + 192, vreinterpretq_u8_u32(vcombine_u32(vget_high_u32(t01.val[1]), vget_high_u32(t23.val[1]))));
}

}  // namespace

std::size_t chacha20_blocks_neon(const ChachaKey& k, std::uint32_t counter, std::size_t nblocks,
                                 std::uint8_t* out) {
    static const std::uint32_t sigma[4] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u};
    static const std::uint32_t lane_ids[4] = {0, 1, 2, 3};
    uint32x4_t in[16];
    for (int i = 0; i < 4; ++i) in[i] = vdupq_n_u32(sigma[i]);
    for (int i = 0; i < 8; ++i) in[4 + i] = vdupq_n_u32(k.key[i]);
    for (int i = 0; i < 3; ++i) in[13 + i] = vdupq_n_u32(k.nonce[i]);
    const uint32x4_t lanes = vld1q_u32(lane_ids);
    std::size_t done = 0;
    for (; done + 4 <= nblocks; done += 4, out += 4 * kChachaBlockBytes) {
        in[12] = vaddq_u32(vdupq_n_u32(counter + static_cast<std::uint32_t>(done)), lanes);
        uint32x4_t x[16];
        for (int i = 0; i < 16; ++i) x[i] = in[i];
        for (int r = 0; r < 10; ++r) {
            quarter_neon(x[0], x[4], x[8], x[12]);
            quarter_neon(x[1], x[5], x[9], x[13]);
            quarter_neon(x[2], x[6], x[10], x[14]);
            quarter_neon(x[3], x[7], x[11], x[15]);
            quarter_neon(x[0], x[5], x[10], x[15]);
            quarter_neon(x[1], x[6], x[11], x[12]);
            quarter_neon(x[2], x[7], x[8], x[13]);
            quarter_neon(x[3], x[4], x[9], x[14]);
        }
        for (int i = 0; i < 16; ++i) x[i] = vaddq_u32(x[i], in[i]);
        for (int g = 0; g < 4; ++g) store4_neon(x + 4 * g, out + 16 * g);
    }
    return done;
}

}  // namespace fedgate::detail
#endif  // __aarch64__
