// The table discrete Gaussian sampler (docs/privacy.md, "Exactness of the samplers"): the fast
// path of dgauss_fast.hpp on one primary keystream word per sample, and in sample order the slow
// path for the few it leaves (pool hits with their exact acceptance test, rejections), which
// reads the secondary keystream (block 2^31 on) as a sequence. Every decision depends only on the
// seed and the index, so every SIMD level gives the same integers.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "dgauss_fast.hpp"
#include "dgauss_plan.hpp"
#include "fedgate/chacha20.hpp"
#include "fedgate/cpu.hpp"
#include "fedgate/noise.hpp"

namespace fedgate {
namespace dg {
namespace {

constexpr std::size_t kChunk = 1024;  // samples per primary keystream chunk (64 blocks, 4 KiB)

void load_words(const std::uint8_t* bytes, std::size_t n, std::uint32_t* out) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    std::memcpy(out, bytes, 4 * n);
#else
    for (std::size_t i = 0; i < n; ++i) {
        const std::uint8_t* b = bytes + 4 * i;
        out[i] = std::uint32_t{b[0]} | std::uint32_t{b[1]} << 8 | std::uint32_t{b[2]} << 16 |
                 std::uint32_t{b[3]} << 24;  // the words are little-endian on every host
    }
#endif
}

// The secondary keystream as uint32 words in order.
class Words32 {
   public:
    explicit Words32(const ChachaKey& key) : key_(key) {}

    std::uint32_t next() {
        if (pos_ == kWords) refill();
        return buf_[pos_++];
    }
    u64 next64() {  // the first word drawn is the most significant
        const u64 hi = next();
        return (hi << 32) | next();
    }

   private:
    static constexpr std::size_t kBlocks = 16;
    static constexpr std::size_t kWords = kBlocks * kChachaBlockBytes / 4;

    void refill() {
        if (counter_ + kBlocks > kChachaMaxBlocks) throw std::length_error("noise keystream exhausted");
        std::uint8_t bytes[kBlocks * kChachaBlockBytes];
        chacha20_blocks(key_, static_cast<std::uint32_t>(counter_), kBlocks, bytes);
        counter_ += kBlocks;
        load_words(bytes, kWords, buf_);
        pos_ = 0;
    }

    ChachaKey key_;
    u64 counter_ = kSecondaryBlock;
    std::uint32_t buf_[kWords] = {};
    std::size_t pos_ = kWords;
};

// Given words instead of the keystream (the tests' way into the slow path's rare branches).
class ArrayWords {
   public:
    ArrayWords(const std::uint32_t* words, std::size_t n) : words_(words), n_(n) {}

    std::uint32_t next() {
        if (pos_ == n_) throw std::out_of_range("dgauss slow path: ran out of the given words");
        return words_[pos_++];
    }
    u64 next64() {
        const u64 hi = next();
        return (hi << 32) | next();
    }

   private:
    const std::uint32_t* words_;
    std::size_t n_, pos_ = 0;
};

// Lemire's multiply-shift on 32-bit words, exactly uniform in [0, n), 1 <= n < 2^32.
template <typename Rng>
u64 uniform32(Rng& rng, u64 n) {
    u64 x = u64{rng.next()} * n;
    if ((x & 0xffffffffu) < n) {
        const u64 t = ((u64{1} << 32) - n) % n;
        while ((x & 0xffffffffu) < t) x = u64{rng.next()} * n;
    }
    return x >> 32;
}

std::int32_t signed_value(u64 m, unsigned s) {
    return s != 0 ? -static_cast<std::int32_t>(m) : static_cast<std::int32_t>(m);
}

// A pool hit: a uniform pool unit, then its exact test (maybe units) or the tail / reject units.
// Returns true with *x set when accepted.
template <typename Rng>
bool pool_draw(const Plan& pl, Rng& rng, std::int32_t* x) {
    const u64 t = uniform32(rng, pl.pool);
    const u64 maybe = pl.prefix[pl.J];
    if (t < maybe) {
        u64 j = pl.guide[(t * pl.guide_scale) >> 32];  // the last bucket starting at or before t
        while (pl.prefix[j + 1] <= t) ++j;
        const u64 off = t - pl.prefix[j];
        const u64 r = off & (pl.w() - 1), k = pl.A[j] + (off >> (pl.omega + 1));
        const unsigned s = static_cast<unsigned>((off >> pl.omega) & 1);
        const u64 m = j * pl.w() + r;
        const u64 v_hi = rng.next64(), v_lo = rng.next64();
        if (!exact_test(pl, k, m, s, v_hi, v_lo, false)) return false;
        *x = signed_value(m, s);
        return true;
    }
    if (t == maybe) {  // the tail unit: |x| >= M0 has mass below 2^-100 of it
        const u64 v_hi = rng.next64(), v_lo = rng.next64();
        if (v_hi == 0 && v_lo < (u64{1} << 28)) {
            throw std::runtime_error("discrete Gaussian: a draw fell in the tail beyond the table");
        }
    }
    return false;
}

template <typename Rng>
std::int32_t slow_path(const Plan& pl, const FastConsts& k, Kind kind, Rng& rng) {
    std::int32_t x = 0;
    for (;;) {
        if (kind == Kind::pool && pool_draw(pl, rng, &x)) return x;
        kind = decode_word(k, rng.next(), &x);
        if (kind == Kind::out) return x;
    }
}

template <typename T>
std::size_t decode(const FastConsts& k, const std::uint32_t* u, std::size_t n, T* dst, std::uint32_t mask,
                   std::uint32_t* exc) {
    switch (simd_level()) {
#if defined(__x86_64__)
        case SimdLevel::avx512: return decode_avx512(k, u, n, dst, mask, exc);
        case SimdLevel::avx2: return decode_avx2(k, u, n, dst, mask, exc);
#endif
        default: return decode_scalar(k, u, n, dst, mask, exc);
    }
}

// Runs the sampler over n samples into dst (stored for T = int64, added mod mask + 1 otherwise).
template <typename T>
void run(const std::uint8_t seed[32], u64 num, u64 den, std::size_t n, T* dst, std::uint32_t mask) {
    if (n > kMaxSamples) throw std::length_error("discrete Gaussian: too many samples for one seed");
    const std::shared_ptr<const Plan> plan = get_plan(num, den);
    const FastConsts k = fast_consts(*plan);
    const ChachaKey key = chacha20_setup(seed, kNoiseNonce);
    Words32 secondary(key);
    alignas(64) std::uint8_t bytes[kChunk * 4];
    alignas(64) std::uint32_t words[kChunk];
    std::uint32_t exc[kChunk];
    for (std::size_t start = 0; start < n; start += kChunk) {
        const std::size_t len = std::min(kChunk, n - start);
        const std::size_t blocks = (len * 4 + kChachaBlockBytes - 1) / kChachaBlockBytes;
        chacha20_blocks(key, static_cast<std::uint32_t>(start / 16), blocks, bytes);
        load_words(bytes, len, words);
        const std::size_t n_exc = decode(k, words, len, dst + start, mask, exc);
        for (std::size_t e = 0; e < n_exc; ++e) {  // in index order: the secondary stream lines up
            const std::uint32_t i = exc[e];
            std::int32_t unused = 0;
            const Kind kind = decode_word(k, words[i], &unused);
            apply(dst + start + i, slow_path(*plan, k, kind, secondary), mask);
        }
    }
}

}  // namespace

std::int32_t slow_path_words(const Plan& pl, bool pool, const std::uint32_t* words, std::size_t n) {
    ArrayWords rng(words, n);
    return slow_path(pl, fast_consts(pl), pool ? Kind::pool : Kind::reject, rng);
}

}  // namespace dg

void dgauss_sample(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, std::size_t n,
                   std::int64_t* out) {
    dg::run(seed, num, den, n, out, 0);
}

template <typename T>
void dgauss_add(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, unsigned bits, T* acc,
                std::size_t n) {
    if (bits < 1 || bits > 8 * sizeof(T)) throw std::invalid_argument("noise: bits out of range");
    const std::uint32_t mask = bits == 32 ? ~std::uint32_t{0} : (std::uint32_t{1} << bits) - 1;
    dg::run(seed, num, den, n, acc, mask);
}

template void dgauss_add<std::uint16_t>(const std::uint8_t*, std::uint64_t, std::uint64_t, unsigned,
                                        std::uint16_t*, std::size_t);
template void dgauss_add<std::uint32_t>(const std::uint8_t*, std::uint64_t, std::uint64_t, unsigned,
                                        std::uint32_t*, std::size_t);

}  // namespace fedgate
