// Mask expansion and fused mask application: the hot loops of client masking and server unmasking.
#include "fedgate/mask.hpp"

#include <algorithm>
#include <vector>

#include "fedgate/chacha20.hpp"

namespace fedgate {
namespace {

// 8 KiB of keystream per chunk: small enough for L1 next to the acc chunk, large enough that the
// 16-block AVX-512 path runs at full width.
constexpr std::size_t kChunkBytes = 8192;
static_assert(kChunkBytes % kChachaBlockBytes == 0, "chunks start on block boundaries");

template <typename T>
void check_stream(std::size_t n) {
    chacha20_check_range(0, static_cast<std::uint64_t>(n) * sizeof(T));
}

}  // namespace

template <typename T>
void expand(const std::uint8_t seed[32], unsigned bits, T* out, std::size_t n) {
    const T mask = ring_mask<T>(bits);
    check_stream<T>(n);
    const ChachaKey key = chacha20_setup(seed, kLibsodiumDrgNonce);
    constexpr std::size_t per_chunk = kChunkBytes / sizeof(T);
    for (std::size_t i0 = 0; i0 < n; i0 += per_chunk) {
        const std::size_t len = std::min(per_chunk, n - i0);
        const auto counter = static_cast<std::uint32_t>(i0 * sizeof(T) / kChachaBlockBytes);
        chacha20_keystream(key, counter, reinterpret_cast<std::uint8_t*>(out + i0), len * sizeof(T));
        // Reduce while the chunk is still in L1.
        for (std::size_t i = i0; i < i0 + len; ++i) out[i] &= mask;
    }
}

template <typename T>
void apply_masks(T* acc, std::size_t n, const Seed* add, std::size_t n_add, const Seed* sub,
                 std::size_t n_sub, unsigned bits) {
    const T mask = ring_mask<T>(bits);
    check_stream<T>(n);
    std::vector<ChachaKey> keys;
    keys.reserve(n_add + n_sub);
    for (std::size_t s = 0; s < n_add; ++s) keys.push_back(chacha20_setup(add[s], kLibsodiumDrgNonce));
    for (std::size_t s = 0; s < n_sub; ++s) keys.push_back(chacha20_setup(sub[s], kLibsodiumDrgNonce));
    constexpr std::size_t per_chunk = kChunkBytes / sizeof(T);
    alignas(64) T words[per_chunk];
    for (std::size_t i0 = 0; i0 < n; i0 += per_chunk) {
        const std::size_t len = std::min(per_chunk, n - i0);
        const auto counter = static_cast<std::uint32_t>(i0 * sizeof(T) / kChachaBlockBytes);
        T* a = acc + i0;
        for (std::size_t s = 0; s < keys.size(); ++s) {
            chacha20_keystream(keys[s], counter, reinterpret_cast<std::uint8_t*>(words), len * sizeof(T));
            if (s < n_add) {
                for (std::size_t i = 0; i < len; ++i) a[i] = static_cast<T>(a[i] + words[i]);
            } else {
                for (std::size_t i = 0; i < len; ++i) a[i] = static_cast<T>(a[i] - words[i]);
            }
        }
        // Words wrap mod 2^16 / 2^32, multiples of 2^bits, so one final reduction is exact.
        for (std::size_t i = 0; i < len; ++i) a[i] &= mask;
    }
}

#define FEDGATE_INSTANTIATE(T)                                                                   \
    template void expand<T>(const std::uint8_t*, unsigned, T*, std::size_t);                     \
    template void apply_masks<T>(T*, std::size_t, const Seed*, std::size_t, const Seed*,         \
                                 std::size_t, unsigned);
FEDGATE_INSTANTIATE(std::uint16_t)
FEDGATE_INSTANTIATE(std::uint32_t)
#undef FEDGATE_INSTANTIATE

}  // namespace fedgate
