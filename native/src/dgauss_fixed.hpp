// Directed-rounding integer arithmetic for the table discrete Gaussian (dgauss_*.cpp only).
//
// A real x in [0, 2) is carried as an interval of integers [lo, hi] with lo <= x * 2^127 <= hi;
// every operation rounds lo down and hi up, so an interval always contains the exact value. No
// floating point is involved anywhere.
#pragma once

#include <cstdint>

namespace fedgate::dg {

using u64 = std::uint64_t;
using u128 = unsigned __int128;

constexpr int kFrac = 127;
constexpr u128 kOne = u128{1} << kFrac;

struct Interval {
    u128 lo, hi;
};

// A 192-bit unsigned integer, most significant limb first.
struct U192 {
    u64 w[3];
};

inline u64 hi64(u128 x) { return static_cast<u64>(x >> 64); }
inline u64 lo64(u128 x) { return static_cast<u64>(x); }

inline bool less(const U192& a, const U192& b) {
    for (int i = 0; i < 3; ++i) {
        if (a.w[i] != b.w[i]) return a.w[i] < b.w[i];
    }
    return false;
}

// a * b for a < 2^64, b < 2^128.
inline U192 mul_64_128(u64 a, u128 b) {
    const u128 low = u128{a} * lo64(b);
    const u128 mid = u128{a} * hi64(b) + hi64(low);
    return {{hi64(mid), lo64(mid), lo64(low)}};
}

inline U192 add_small(U192 x, u64 v) {
    for (int i = 2; i >= 0 && v != 0; --i) {
        const u64 s = x.w[i] + v;
        v = s < v ? 1 : 0;
        x.w[i] = s;
    }
    return x;
}

// floor or ceil of x / 2^s, 0 < s < 128, when the result fits 128 bits.
inline u128 shift_right(const U192& x, int s, bool up) {
    const u128 top = (u128{x.w[0]} << 64) | x.w[1];
    u128 q;
    bool rest;
    if (s < 64) {
        q = (top << (64 - s)) | (x.w[2] >> s);
        rest = (x.w[2] & ((u64{1} << s) - 1)) != 0;
    } else {
        q = top >> (s - 64);
        rest = x.w[2] != 0 || (s > 64 && (top & ((u128{1} << (s - 64)) - 1)) != 0);
    }
    return q + (up && rest ? 1 : 0);
}

// floor or ceil of a * b / 2^127 for a, b <= 2^128 - 1 whose product over 2^127 fits 128 bits.
inline u128 mul_fix(u128 a, u128 b, bool up) {
    const u128 ll = u128{lo64(a)} * lo64(b), lh = u128{lo64(a)} * hi64(b);
    const u128 hl = u128{hi64(a)} * lo64(b), hh = u128{hi64(a)} * hi64(b);
    const u128 mid = u128{hi64(ll)} + lo64(lh) + lo64(hl);
    const u64 w3 = lo64(ll), w2 = lo64(mid);
    const u128 top = hh + hi64(lh) + hi64(hl) + hi64(mid);  // bits 128..255
    const u128 q = (top << 1) | (w2 >> 63);
    const bool rest = (w2 & ~(u64{1} << 63)) != 0 || w3 != 0;
    return q + (up && rest ? 1 : 0);
}

// floor or ceil of x * num / den for x < 2^128, num <= den < 2^64 (the result fits 128 bits).
inline u128 mul_div(u128 x, u64 num, u64 den, bool up) {
    const U192 p = mul_64_128(num, x);
    u128 rem = 0;
    u64 q[3];
    for (int i = 0; i < 3; ++i) {
        const u128 cur = (rem << 64) | p.w[i];
        q[i] = static_cast<u64>(cur / den);
        rem = cur % den;
    }
    const u128 out = (u128{q[1]} << 64) | q[2];
    return out + (up && rem != 0 ? 1 : 0);
}

inline Interval mul(const Interval& a, const Interval& b) {
    return {mul_fix(a.lo, b.lo, false), mul_fix(a.hi, b.hi, true)};
}

// Bounds on 2^127 * exp(-num / den) for 0 <= num / den, den >= 1 (num < 2^62, den < 2^56).
Interval exp_neg(u64 num, u64 den);

}  // namespace fedgate::dg
