// The per-variance tables of the table discrete Gaussian sampler (docs/privacy.md, "Exactness of
// the samplers"), shared by dgauss_plan.cpp (construction), dgauss_table.cpp (sampling) and
// dgauss_x86.cpp (the vector fast path). Private to those files and bind_noise.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "dgauss_fixed.hpp"

namespace fedgate::dg {

// log2 of the buckets per standard deviation (w = 2^omega ~ sigma / 2^8) and the tail cut:
// M0 = J w is the least multiple of w with M0^2 >= 208 sigma^2, so phi(M0) <= exp(-104).
constexpr int kBucketsLog2 = 8;
constexpr u64 kTailSigmasSq = 208;
// Samples draw primary words from keystream block 0, exceptions secondary words from block 2^31.
constexpr std::uint32_t kSecondaryBlock = std::uint32_t{1} << 31;
constexpr std::size_t kMaxSamples = std::size_t{1} << 35;  // 2^31 blocks of 16 words

struct Plan {
    u64 a = 0, b = 0;    // sigma^2 = a / b
    unsigned omega = 0;  // bucket width w = 2^omega
    unsigned p = 0;      // 2^p alias slots of 2^(32 - p) units each
    std::uint32_t J = 0; // buckets 0..J-1; outcome J is the pool
    u64 C = 0;           // units per unit of phi: tau(m, s) = C phi(m)
    u64 pool = 0;        // weight of the pool outcome
    std::vector<std::uint32_t> slots;  // (thr / 2) << p | alias, one per slot
    std::vector<u64> A;                // sure rows per element and sign, one per bucket
    std::vector<u64> prefix;           // prefix[j] = sum_{i<j} 2w (Q_i - A_i), J + 1 entries
    std::vector<u128> lam_lo, lam_hi;  // C phi(j w) * 2^64, rounded down and up
    u128 inv_lo = 0, inv_hi = 0;       // 2^128 / (2a), rounded down and up (stage 1 of exact_test)
    // Starting points for the search of a pool unit t among the buckets: the bucket of t is at or
    // after guide[(t * guide_scale) >> 32] (a speed-up only; the search ends at the same bucket).
    std::vector<std::uint32_t> guide;
    u64 guide_scale = 0;

    u64 w() const { return u64{1} << omega; }
};

// Builds (or returns the cached) plan of sigma^2 = num / den; throws std::invalid_argument on a
// variance outside (0, 2^32] or a denominator outside 1..2^12, std::runtime_error if a table
// entry cannot be decided at the working precision (never observed; see dgauss_plan.cpp).
std::shared_ptr<const Plan> get_plan(u64 num, u64 den);

// The exact acceptance test: is k + (v + theta) / 2^128 < tau(m, s) for every theta in [0, 1)?
// v = (v_hi, v_lo) are the next 128 keystream bits. stage 2 skips the cheap first stage (tests).
// Throws std::runtime_error when neither answer can be proven (below 2^-115 per proposal).
bool exact_test(const Plan& pl, u64 k, u64 m, unsigned s, u64 v_hi, u64 v_lo, bool force_stage2);

// The slow path after a pool hit (pool) or a rejection, reading the given words instead of the
// secondary keystream (tests). Throws std::out_of_range when they run out.
std::int32_t slow_path_words(const Plan& pl, bool pool, const std::uint32_t* words, std::size_t n);

}  // namespace fedgate::dg
