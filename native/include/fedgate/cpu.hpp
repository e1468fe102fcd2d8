// Runtime CPU feature detection for SIMD dispatch (the build never assumes more than the baseline).
#pragma once

namespace fedgate {

enum class SimdLevel { scalar = 0, neon = 1, avx2 = 2, avx512 = 3 };

// The widest SIMD level this CPU supports and the kernels implement. Honors the environment
// variable FEDGATE_SIMD=scalar|avx2|avx512|neon to cap it (for tests and benchmarks).
SimdLevel simd_level();
const char* simd_level_name(SimdLevel level);

}  // namespace fedgate
