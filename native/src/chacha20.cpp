// Portable ChaCha20 and the run-time choice of the widest block function this CPU allows.
#include "fedgate/chacha20.hpp"

#include <cstring>
#include <stdexcept>
#include <string>

#include "fedgate/cpu.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "keystream words are read as little-endian by memcpy");

namespace fedgate {
namespace {

inline std::uint32_t load_le32(const std::uint8_t* p) {
    std::uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

inline std::uint32_t rotl(std::uint32_t v, int c) { return (v << c) | (v >> (32 - c)); }

inline void quarter(std::uint32_t& a, std::uint32_t& b, std::uint32_t& c, std::uint32_t& d) {
    a += b; d ^= a; d = rotl(d, 16);
    c += d; b ^= c; b = rotl(b, 12);
    a += b; d ^= a; d = rotl(d, 8);
    c += d; b ^= c; b = rotl(b, 7);
}

}  // namespace

ChachaKey chacha20_setup(const std::uint8_t key[32], const std::uint8_t nonce[12]) {
    ChachaKey k{};
    for (int i = 0; i < 8; ++i) k.key[i] = load_le32(key + 4 * i);
    for (int i = 0; i < 3; ++i) k.nonce[i] = load_le32(nonce + 4 * i);
    return k;
}

namespace detail {

void chacha20_block_scalar(const ChachaKey& k, std::uint32_t counter, std::uint8_t out[64]) {
    std::uint32_t in[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                            k.key[0], k.key[1], k.key[2], k.key[3],
                            k.key[4], k.key[5], k.key[6], k.key[7],
                            counter, k.nonce[0], k.nonce[1], k.nonce[2]};
    std::uint32_t x[16];
    std::memcpy(x, in, sizeof x);
    for (int r = 0; r < 10; ++r) {
        quarter(x[0], x[4], x[8], x[12]);
        quarter(x[1], x[5], x[9], x[13]);
        quarter(x[2], x[6], x[10], x[14]);
        quarter(x[3], x[7], x[11], x[15]);
        quarter(x[0], x[5], x[10], x[15]);
        quarter(x[1], x[6], x[11], x[12]);
        quarter(x[2], x[7], x[8], x[13]);
        quarter(x[3], x[4], x[9], x[14]);
    }
    for (int i = 0; i < 16; ++i) x[i] += in[i];
    std::memcpy(out, x, 64);
}

}  // namespace detail

void chacha20_blocks(const ChachaKey& k, std::uint32_t counter, std::size_t nblocks, std::uint8_t* out) {
    std::size_t done = 0;
    const SimdLevel level = simd_level();
#if defined(__x86_64__)
    if (level == SimdLevel::avx512) done += detail::chacha20_blocks_avx512(k, counter, nblocks, out);
    if (level == SimdLevel::avx512 || level == SimdLevel::avx2) {
        done += detail::chacha20_blocks_avx2(k, counter + static_cast<std::uint32_t>(done),
                                             nblocks - done, out + done * kChachaBlockBytes);
    }
#elif defined(__aarch64__)
    if (level == SimdLevel::neon) done += detail::chacha20_blocks_neon(k, counter, nblocks, out);
#else
    (void)level;
#endif
    for (; done < nblocks; ++done) {
        detail::chacha20_block_scalar(k, counter + static_cast<std::uint32_t>(done),
                                      out + done * kChachaBlockBytes);
    }
}

void chacha20_check_range(std::uint64_t counter, std::uint64_t nbytes) {
    const std::uint64_t blocks = nbytes / kChachaBlockBytes + (nbytes % kChachaBlockBytes != 0);
    if (counter > kChachaMaxBlocks || blocks > kChachaMaxBlocks - counter) {
        throw std::length_error("ChaCha20-IETF keystream of " + std::to_string(nbytes) +
                                " bytes from block " + std::to_string(counter) +
                                " exceeds the 2^32-block limit of one nonce");
    }
}

void chacha20_keystream(const ChachaKey& k, std::uint32_t counter, std::uint8_t* out, std::size_t nbytes) {
    chacha20_check_range(counter, nbytes);
    const std::size_t full = nbytes / kChachaBlockBytes;
    chacha20_blocks(k, counter, full, out);
    const std::size_t tail = nbytes - full * kChachaBlockBytes;
    if (tail != 0) {
        std::uint8_t last[kChachaBlockBytes];
        detail::chacha20_block_scalar(k, counter + static_cast<std::uint32_t>(full), last);
        std::memcpy(out + full * kChachaBlockBytes, last, tail);
    }
}

}  // namespace fedgate
