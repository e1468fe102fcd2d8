// The noise keystream as a sequence of uint64 words, and exactly uniform integers drawn from it.
// Private to noise.cpp and dgauss.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "fedgate/chacha20.hpp"
#include "fedgate/noise.hpp"

namespace fedgate::noise_detail {

// Sequential reader of the noise keystream, refilled 16 blocks at a time (the wide ChaCha20 paths).
class WordStream {
   public:
    explicit WordStream(const std::uint8_t seed[32]) : key_(chacha20_setup(seed, kNoiseNonce)) {}

    std::uint64_t next() {
        if (pos_ == kWords) refill();
        return buf_[pos_++];
    }

   private:
    static constexpr std::size_t kBlocks = 16;
    static constexpr std::size_t kWords = kBlocks * kChachaBlockBytes / 8;

    void refill() {
        if (counter_ + kBlocks > kChachaMaxBlocks) throw std::length_error("noise keystream exhausted");
        std::uint8_t bytes[kBlocks * kChachaBlockBytes];
        chacha20_blocks(key_, static_cast<std::uint32_t>(counter_), kBlocks, bytes);
        counter_ += kBlocks;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        std::memcpy(buf_, bytes, sizeof(bytes));
#else
        for (std::size_t i = 0; i < kWords; ++i) {
            std::uint64_t w = 0;
            for (int b = 7; b >= 0; --b) w = (w << 8) | bytes[8 * i + static_cast<std::size_t>(b)];
            buf_[i] = w;  // the words are little-endian on every host
        }
#endif
        pos_ = 0;
    }

    ChachaKey key_;
    std::uint64_t counter_ = 0;
    std::uint64_t buf_[kWords] = {};
    std::size_t pos_ = kWords;
};

// Exactly uniform in [0, n), n >= 1 (Lemire 2019, with the rejection step kept).
inline std::uint64_t uniform_below(WordStream& rng, std::uint64_t n) {
    unsigned __int128 m = static_cast<unsigned __int128>(rng.next()) * n;
    auto low = static_cast<std::uint64_t>(m);
    if (low < n) {
        const std::uint64_t threshold = (0 - n) % n;  // 2^64 mod n
        while (low < threshold) {
            m = static_cast<unsigned __int128>(rng.next()) * n;
            low = static_cast<std::uint64_t>(m);
        }
    }
    return static_cast<std::uint64_t>(m >> 64);
}

}  // namespace fedgate::noise_detail
