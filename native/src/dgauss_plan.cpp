// Construction of the per-variance tables of the table discrete Gaussian (docs/privacy.md).
//
// Every integer of a plan is defined as a floor or ceiling of an exact real number (C phi(j w),
// ...). They are computed here from rigorous intervals: phi(j w) and phi(j w + w - 1) by
// recurrences (a fresh direct evaluation every 64 buckets keeps the intervals narrow, about
// 2^-105), falling back to a direct evaluation (about 2^-119) where an interval straddles an
// integer. If even that cannot decide, the build throws: an integer within 2^-88 of one of these
// reals is a deterministic event of probability below 2^-70 per variance, never observed.
#include <algorithm>
#include <mutex>
#include <stdexcept>

#include "dgauss_plan.hpp"
#include "fedgate/noise.hpp"

namespace fedgate::dg {
namespace {

constexpr unsigned kAnchorEvery = 64;
constexpr std::size_t kCacheSize = 8;

void check_variance(u64 num, u64 den) {
    if (den == 0 || den > kDgaussMaxDen) throw std::invalid_argument("dgauss: denominator out of range");
    if (num == 0) throw std::invalid_argument("dgauss: variance must be > 0");
    if (num / den > kDgaussMaxVariance || (num / den == kDgaussMaxVariance && num % den != 0)) {
        throw std::invalid_argument("dgauss: variance above the supported maximum");
    }
}

u64 isqrt(u64 x) {
    u64 r = 0;
    for (u64 bit = u64{1} << 62; bit != 0; bit >>= 2) {
        if (x >= r + bit) {
            x -= r + bit;
            r = (r >> 1) + bit;
        } else {
            r >>= 1;
        }
    }
    return r;
}

unsigned bit_length(u64 x) { return x == 0 ? 0 : 64 - static_cast<unsigned>(__builtin_clzll(x)); }

// ceil(c * x / 2^127) and floor(c * x / 2^127) of an interval; equal ends mean "decided".
u64 ceil_units(u64 c, u128 x) { return static_cast<u64>(shift_right(mul_64_128(c, x), kFrac, true)); }
u64 floor_units(u64 c, u128 x) { return static_cast<u64>(shift_right(mul_64_128(c, x), kFrac, false)); }

// Q = ceil(C phi), with phi > 0 known from its interval (so the ceiling is at least 1).
u64 decide_ceil(u64 c, Interval x, u64 m2b, u64 den) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        const u64 lo = std::max<u64>(1, ceil_units(c, x.lo)), hi = ceil_units(c, x.hi);
        if (lo == hi) return lo;
        x = exp_neg(m2b, den);
    }
    throw std::runtime_error("dgauss: table entry undecided at the working precision");
}

u64 decide_floor(u64 c, Interval x, u64 m2b, u64 den) {
    for (int attempt = 0; attempt < 2; ++attempt) {
        const u64 lo = floor_units(c, x.lo), hi = floor_units(c, x.hi);
        if (lo == hi) return lo;
        x = exp_neg(m2b, den);
    }
    throw std::runtime_error("dgauss: table entry undecided at the working precision");
}

// phi(j w) (x) and phi(j w + w - 1) (y) for j = 0..J-1 as intervals.
void phi_tables(const Plan& pl, std::vector<Interval>& x, std::vector<Interval>& y) {
    const u64 w = pl.w(), b = pl.b, den = 2 * pl.a;
    x.resize(pl.J);
    y.resize(pl.J);
    // phi((j+1) w) = phi(j w) rho_j, rho_j = exp(-(2j+1) w^2 b / 2a); phi((j+1) w + w - 1) =
    // phi(j w + w - 1) sigma_j, sigma_j = exp(-(2j w + 3w - 2) w b / 2a); both ratios shrink by
    // exp(-2 w^2 b / 2a) per step.
    const Interval z = exp_neg(2 * w * w * b, den);
    Interval rho{}, sig{};
    for (std::uint32_t j = 0; j < pl.J; ++j) {
        if (j % kAnchorEvery == 0) {
            const u64 m = u64{j} * w;
            x[j] = exp_neg(m * m * b, den);
            y[j] = exp_neg((m + w - 1) * (m + w - 1) * b, den);
            rho = exp_neg((2 * u64{j} + 1) * w * w * b, den);
            sig = exp_neg((2 * m + 3 * w - 2) * w * b, den);
        } else {
            x[j] = mul(x[j - 1], rho);
            y[j] = mul(y[j - 1], sig);
            rho = mul(rho, z);
            sig = mul(sig, z);
        }
    }
}

// C = 2 floor(N / (4 w S)), N = 2^32 - 1 - 2 w J, S = sum phi(j w) (less 1/2 when w = 1).
u64 choose_c(const Plan& pl, const std::vector<Interval>& x) {
    constexpr int kShift = kFrac - 114;  // S carried at 2^-114: up to 2^13 buckets fit
    u128 s_lo = 0, s_hi = 0;
    for (const Interval& v : x) {
        s_lo += v.lo >> kShift;
        s_hi += (v.hi >> kShift) + 1;
    }
    if (pl.w() == 1) {
        s_lo -= u128{1} << 113;
        s_hi -= u128{1} << 113;
    }
    const u64 n = (u64{1} << 32) - 1 - 2 * pl.w() * pl.J;
    const U192 target{{n >> 14, (n & 0x3fff) << 50, 0}};  // N * 2^114
    auto largest = [&](u128 s) {  // the largest c with 4 w c s <= N 2^114
        u64 lo = 0, hi = u64{1} << 33;
        while (hi - lo > 1) {
            const u64 mid = lo + (hi - lo) / 2;
            (less(target, mul_64_128(4 * pl.w() * mid, s)) ? hi : lo) = mid;
        }
        return lo;
    };
    const u64 c_lo = largest(s_hi), c_hi = largest(s_lo);
    if (c_lo != c_hi || c_lo == 0) throw std::runtime_error("dgauss: scale undecided at the working precision");
    return 2 * c_lo;
}

// Vose's alias method in exact integers, vectors used as stacks in index order (normative: the
// slots are part of the sampler's definition).
void build_alias(Plan& pl, std::vector<u64> weight) {
    const u64 cap = u64{1} << (32 - pl.p);
    const std::size_t slots = std::size_t{1} << pl.p;
    std::vector<u64> thr(slots, cap);
    std::vector<std::uint32_t> alias(slots);
    std::vector<std::uint32_t> small, large;
    for (std::uint32_t i = 0; i < slots; ++i) {
        alias[i] = i;
        (weight[i] < cap ? small : large).push_back(i);
    }
    while (!small.empty() && !large.empty()) {
        const std::uint32_t s = small.back(), g = large.back();
        small.pop_back();
        large.pop_back();
        thr[s] = weight[s];
        alias[s] = g;
        weight[g] -= cap - weight[s];
        (weight[g] < cap ? small : large).push_back(g);
    }
    if (!small.empty()) throw std::logic_error("dgauss: alias weights do not sum to 2^32");
    pl.slots.resize(slots);
    for (std::size_t i = 0; i < slots; ++i) {
        pl.slots[i] = static_cast<std::uint32_t>((thr[i] / 2) << pl.p) | alias[i];
    }
}

void build_guide(Plan& pl) {
    const u64 maybe = pl.prefix[pl.J];
    if (maybe == 0) return;  // no maybe units: the pool never searches
    const unsigned g = pl.p;
    pl.guide_scale = ((u64{1} << (32 + g)) / maybe);
    pl.guide.resize((std::size_t{1} << g) + 1);
    std::uint32_t j = 0;
    for (std::size_t i = 0; i < pl.guide.size(); ++i) {
        const u64 t = static_cast<u64>((u128{i} << 32) / pl.guide_scale);  // >= every t mapped to i
        while (j + 1 < pl.J && pl.prefix[j + 1] <= std::min(t, maybe - 1)) ++j;
        pl.guide[i] = j;
    }
}

void fill_buckets(Plan& pl, const std::vector<Interval>& x, const std::vector<Interval>& y) {
    const u64 w = pl.w(), b = pl.b, den = 2 * pl.a, c = pl.C;
    pl.A.resize(pl.J);
    pl.prefix.assign(pl.J + 1, 0);
    pl.lam_lo.resize(pl.J);
    pl.lam_hi.resize(pl.J);
    std::vector<u64> weight(std::size_t{1} << pl.p, 0);
    u64 sure = 0;
    for (std::uint32_t j = 0; j < pl.J; ++j) {
        const u64 m = u64{j} * w;
        u64 q, a;
        if (j == 0) {
            q = w > 1 ? c : c / 2;
            a = w > 1 ? decide_floor(c, y[0], (w - 1) * (w - 1) * b, den) : c / 2;
        } else {
            q = decide_ceil(c, x[j], m * m * b, den);
            a = decide_floor(c, y[j], (m + w - 1) * (m + w - 1) * b, den);
        }
        if (a > q) throw std::logic_error("dgauss: sure rows above the proposal");
        pl.A[j] = a;
        weight[j] = 2 * w * a;
        sure += weight[j];
        pl.prefix[j + 1] = pl.prefix[j] + 2 * w * (q - a);
        pl.lam_lo[j] = shift_right(mul_64_128(c, x[j].lo), kFrac - 64, false);
        pl.lam_hi[j] = shift_right(mul_64_128(c, x[j].hi), kFrac - 64, true);
    }
    pl.pool = (u64{1} << 32) - sure;
    build_guide(pl);
    weight[pl.J] = pl.pool;
    // At least the tail unit must be left after all maybe units (guaranteed by the choice of C).
    if (pl.prefix[pl.J] >= pl.pool) throw std::logic_error("dgauss: proposal exceeds 2^32 units");
    build_alias(pl, std::move(weight));
}

std::shared_ptr<const Plan> build_plan(u64 num, u64 den) {
    const u128 all = ~u128{0};  // 2^128 - 1 = q (2a) + rest: 2^128 / 2a lies in [q, q + 1]
    auto pl = std::make_shared<Plan>();
    pl->a = num;
    pl->b = den;
    const u64 whole = num / den;
    const int e = whole == 0 ? -1 : static_cast<int>(bit_length(whole)) - 1;
    pl->omega = static_cast<unsigned>(std::max(0, e / 2 - kBucketsLog2));
    const u64 t = (kTailSigmasSq * num + den - 1) / den;  // M0^2 >= ceil(208 a / b)
    const u64 m_min = isqrt(t - 1) + 1;
    pl->J = static_cast<std::uint32_t>((m_min + pl->w() - 1) >> pl->omega);
    pl->p = bit_length(pl->J);
    pl->inv_lo = all / (2 * num);
    pl->inv_hi = pl->inv_lo + 1;
    std::vector<Interval> x, y;
    phi_tables(*pl, x, y);
    pl->C = choose_c(*pl, x);
    fill_buckets(*pl, x, y);
    return pl;
}

}  // namespace

std::shared_ptr<const Plan> get_plan(u64 num, u64 den) {
    check_variance(num, den);
    static std::mutex mu;
    static std::vector<std::shared_ptr<const Plan>> cache;  // most recent first
    {
        const std::lock_guard<std::mutex> lock(mu);
        for (std::size_t i = 0; i < cache.size(); ++i) {
            if (cache[i]->a == num && cache[i]->b == den) {
                std::rotate(cache.begin(), cache.begin() + static_cast<std::ptrdiff_t>(i),
                            cache.begin() + static_cast<std::ptrdiff_t>(i) + 1);
                return cache[0];
            }
        }
    }
    std::shared_ptr<const Plan> plan = build_plan(num, den);  // slow part outside the lock
    const std::lock_guard<std::mutex> lock(mu);
    cache.insert(cache.begin(), plan);
    if (cache.size() > kCacheSize) cache.pop_back();
    return plan;
}

}  // namespace fedgate::dg
