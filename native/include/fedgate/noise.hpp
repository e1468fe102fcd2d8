// Exact integer noise for distributed differential privacy under secure aggregation, and the
// randomized Hadamard rotation that spreads an update over all coordinates before quantization.
//
// Randomness is the ChaCha20-IETF keystream of a 32-byte noise seed with the nonce "FedgateNoise"
// (not the mask nonce, so a seed reused by mistake still gives unrelated streams), read as
// little-endian uint64 words from counter 0. Every sampler uses integer arithmetic only: uniform
// integers by rejection, Bernoulli(p) for rational p, so the output distribution is exactly the
// stated one (given an ideal keystream), with no floating-point approximation of a pmf.
#pragma once

#include <cstddef>
#include <cstdint>

namespace fedgate {

constexpr std::uint8_t kNoiseNonce[12] = {'F', 'e', 'd', 'g', 'a', 't', 'e', 'N', 'o', 'i', 's', 'e'};

// Limits on the rational Poisson mean lambda = num / den of each side of a Skellam sample.
// den * ceil(2 * lambda) must fit comfortably in 64 bits (see poisson_exact).
constexpr std::uint64_t kNoiseMaxDen = std::uint64_t{1} << 24;
constexpr std::uint64_t kNoiseMaxLambda = std::uint64_t{1} << 20;

// out[i] = P1 - P2 with P1, P2 ~ Poisson(num / den) independent: the symmetric Skellam
// distribution Sk(lambda) with variance 2 * lambda. Throws std::invalid_argument on den == 0,
// den > kNoiseMaxDen, or num / den > kNoiseMaxLambda.
void skellam_sample(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, std::size_t n,
                    std::int64_t* out);

// acc[i] = acc[i] + Sk(num / den) mod 2^bits, the same draws as skellam_sample (same seed, same n).
template <typename T>
void skellam_add(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, unsigned bits, T* acc,
                 std::size_t n);

// Limits of both discrete Gaussian samplers on their variance sigma^2 = num / den.
constexpr std::uint64_t kDgaussMaxDen = std::uint64_t{1} << 12;
constexpr std::uint64_t kDgaussMaxVariance = std::uint64_t{1} << 32;

// out[i] ~ N_Z(0, num / den), the table sampler of docs/privacy.md: per variance an alias table
// over buckets of width ~ sigma / 256 (built once and cached), one 32-bit keystream word per sample
// on the fast path, exact acceptance tests from rigorous bounds on the rest. Throws
// std::invalid_argument on den == 0, den > kDgaussMaxDen, num == 0 or num / den >
// kDgaussMaxVariance; std::runtime_error on the undecided events (below 2^-115 per proposal).
void dgauss_sample(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, std::size_t n,
                   std::int64_t* out);

// acc[i] = acc[i] + N_Z(0, num / den) mod 2^bits, the same draws as dgauss_sample. On a throw acc
// holds a prefix of the noise and must be discarded.
template <typename T>
void dgauss_add(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, unsigned bits, T* acc,
                std::size_t n);

// The reference sampler: Canonne, Kamath, Steinke 2020 (their exact Algorithm 3: discrete Laplace
// proposal, Bernoulli(exp(-gamma)) acceptance) on 64-bit keystream words, O(1) expected work
// whatever the variance but about 15 words per sample. Same limits and errors as dgauss_sample.
void dgauss_cks_sample(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, std::size_t n,
                       std::int64_t* out);

template <typename T>
void dgauss_cks_add(const std::uint8_t seed[32], std::uint64_t num, std::uint64_t den, unsigned bits,
                    T* acc, std::size_t n);

// In-place normalized fast Walsh-Hadamard transform of x (length a power of two, >= 1),
// x <- H x / sqrt(n). Orthonormal and its own inverse.
void fwht(float* x, std::size_t n);

// Rademacher signs from the keystream of seed (nonce "FedgateRotat", counter 0):
// x[i] <- -x[i] where bit i % 8 of stream byte i / 8 is 1.
void flip_signs(const std::uint8_t seed[32], float* x, std::size_t n);

}  // namespace fedgate
