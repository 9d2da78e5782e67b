// The tiled full-rank perturbed matmul (declared in csrc/cuda/perturbed_matmul.cuh): y_m = act(x_m Wp_m^T + b_m).
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>

#include <type_traits>

#include "common.cuh"
#include "normals.cuh"
#include "perturbed_matmul.cuh"

namespace dopamine_fast {
namespace cuda {
namespace {

// A CTA of the full-rank kernel serves one noise id: the members of the call that share it (one, or an
// antithetic pair with signs + and -), or the unperturbed baseline member. A range of members may hold one member
// of a pair only, with sign + or -: `sign` is the sign of a single-member slot.
// slot_of inverts the member numbering of dopamine_fast/plan.py (member_noise_ids); tests/test_member_numbering.py
// checks it.
struct Slot {
  int64_t a, b;  // members (positions in the call); b < 0 when the slot has one member
  uint32_t id;
  bool noisy;
  float sign;
};

// Slot of member m in the numbering of the whole evaluation: the baseline's, then one per noise id.
DF_HOST_DEVICE int64_t global_slot(int64_t m, bool baseline, bool antithetic) {
  const int64_t p = m - (baseline ? 1 : 0);
  if (p < 0) return 0;
  return (baseline ? 1 : 0) + (antithetic ? p / 2 : p);
}

__device__ __forceinline__ Slot slot_of(int64_t q, int64_t first_member, int64_t members, bool baseline,
                                        bool antithetic) {
  const int64_t g = global_slot(first_member, baseline, antithetic) + q;
  if (baseline && g == 0) return Slot{0, -1, 0u, false, 1.0f};
  const int64_t j = g - (baseline ? 1 : 0);
  const int64_t start = baseline ? 1 : 0;
  if (!antithetic) return Slot{start + j - first_member, -1, static_cast<uint32_t>(j), true, 1.0f};
  const int64_t a = start + 2 * j - first_member, b = a + 1;  // positions in the call
  if (a < 0) return Slot{b, -1, static_cast<uint32_t>(j), true, -1.0f};  // the pair's - member alone
  return Slot{a, b < members ? b : -1, static_cast<uint32_t>(j), true, 1.0f};
}

int64_t num_slots(int64_t first_member, int64_t members, bool baseline, bool antithetic) {
  if (members == 0) return 0;
  return global_slot(first_member + members - 1, baseline, antithetic) -
         global_slot(first_member, baseline, antithetic) + 1;
}

template <int N, typename T>
__device__ __forceinline__ void load_row(const T* src, T (&dst)[N]) {
  if constexpr (N == 4 && std::is_same<T, float>::value) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    dst[0] = v.x, dst[1] = v.y, dst[2] = v.z, dst[3] = v.w;
  } else if constexpr (N == 4 && std::is_same<T, double>::value) {
    const double2 u = *reinterpret_cast<const double2*>(src);
    const double2 v = *reinterpret_cast<const double2*>(src + 2);
    dst[0] = u.x, dst[1] = u.y, dst[2] = v.x, dst[3] = v.y;
  } else {
#pragma unroll
    for (int i = 0; i < N; ++i) dst[i] = src[i];
  }
}

// Tiled y = act(x (W + s sigma E)^T + b + s sigma e) for one slot, a tile of 64 outputs and a tile of 16*TB
// rows. Each 16-column stage of W is loaded once, its noise regenerated into shared memory, and the perturbed
// tile reused by every row of the tile (and by both members of an antithetic pair: PAIR).
// 256 threads = 16 (rows, TB each) x 16 (outputs, 4 each).
template <typename T, int TB, bool PAIR>
__global__ void __launch_bounds__(kThreads) perturbed_matmul_kernel(const MatmulParams<T> p) {
  constexpr int BO = 64, BK = 16, BB = 16 * TB, PAD = 4;  // PAD keeps rows 16-byte aligned, spreads banks
  __shared__ __align__(16) T ws[BK][BO + PAD];             // W (+ s sigma E for single-member slots)
  __shared__ __align__(16) T es[PAIR ? BK : 1][BO + PAD];  // sigma E, for pairs
  __shared__ __align__(16) T xa[BK][BB + PAD];
  __shared__ __align__(16) T xb[PAIR ? BK : 1][BB + PAD];

  const Slot slot = slot_of(blockIdx.x, p.first_member, p.members, p.baseline, PAIR);
  const bool has_b = PAIR && slot.b >= 0;
  const int64_t o0 = static_cast<int64_t>(blockIdx.y) * BO, b0 = static_cast<int64_t>(blockIdx.z) * BB;
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;

  T acc_a[TB][4], acc_b[TB][4];
#pragma unroll
  for (int i = 0; i < TB; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) acc_a[i][j] = acc_b[i][j] = T(0);

  auto run_segment = [&](const Segment<T> sg) {
    NoiseKey key = p.key;
    key.stream = sg.stream;
    const int gr = tid >> 2, gc = (tid & 3) * 4;  // this thread's 4 entries of the W / E stage
    const int64_t go = o0 + gr;
    const bool same_x = sg.x_member == 0;
    for (int64_t k0 = 0; k0 < sg.in; k0 += BK) {
      {
        T wv[4] = {T(0), T(0), T(0), T(0)}, ev[4] = {T(0), T(0), T(0), T(0)};
        const int64_t i = k0 + gc;
        if (go < p.out && i < sg.in) {
          const T* wrow = sg.w + go * sg.in;
#pragma unroll
          for (int l = 0; l < 4; ++l)
            if (i + l < sg.in) wv[l] = wrow[i + l];
          if (slot.noisy) {
            float z[4];
            normals4(key, slot.id, go * sg.in + i, sg.in - i, z);
#pragma unroll
            for (int l = 0; l < 4; ++l)
              if (i + l < sg.in) ev[l] = static_cast<T>(slot.sign) * p.sigma * static_cast<T>(z[l]);
          }
        }
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          if constexpr (PAIR) {
            ws[gc + l][gr] = wv[l];
            es[gc + l][gr] = ev[l];
          } else {
            ws[gc + l][gr] = wv[l] + ev[l];  // ev carries the single member's sign
          }
        }
      }
#pragma unroll
      for (int u = 0; u < TB; ++u) {
        const int idx = tid + u * kThreads;
        const int r = idx >> 4, c = idx & 15;
        const int64_t b = b0 + r, i = k0 + c;
        T va = T(0), vb = T(0);
        if (b < p.rows && i < sg.in) {
          const T* row = sg.x + b * sg.x_row + i;
          va = row[slot.a * sg.x_member];
          if (PAIR && has_b && !same_x) vb = row[slot.b * sg.x_member];
        }
        xa[c][r] = va;
        if constexpr (PAIR) xb[c][r] = vb;
      }
      __syncthreads();
      if constexpr (PAIR) {
        if (has_b) {
          const T(*xs)[BB + PAD] = same_x ? xa : xb;
#pragma unroll
          for (int k = 0; k < BK; ++k) {
            T w[4], e[4], x1[TB], x2[TB];
            load_row<4>(&ws[k][tx * 4], w);
            load_row<4>(&es[k][tx * 4], e);
            load_row<TB>(&xa[k][ty * TB], x1);
            load_row<TB>(&xs[k][ty * TB], x2);
#pragma unroll
            for (int j = 0; j < 4; ++j) {
              const T wp = w[j] + e[j], wm = w[j] - e[j];
#pragma unroll
              for (int i = 0; i < TB; ++i) {
                acc_a[i][j] += x1[i] * wp;
                acc_b[i][j] += x2[i] * wm;
              }
            }
          }
        } else {
#pragma unroll
          for (int k = 0; k < BK; ++k) {
            T w[4], e[4], x1[TB];
            load_row<4>(&ws[k][tx * 4], w);
            load_row<4>(&es[k][tx * 4], e);
            load_row<TB>(&xa[k][ty * TB], x1);
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
              for (int i = 0; i < TB; ++i) acc_a[i][j] += x1[i] * (w[j] + e[j]);
          }
        }
      } else {
#pragma unroll
        for (int k = 0; k < BK; ++k) {
          T w[4], x1[TB];
          load_row<4>(&ws[k][tx * 4], w);
          load_row<TB>(&xa[k][ty * TB], x1);
#pragma unroll
          for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int i = 0; i < TB; ++i) acc_a[i][j] += x1[i] * w[j];
        }
      }
      __syncthreads();
    }
  };
  run_segment(p.seg[0]);
  if (p.num_seg > 1) run_segment(p.seg[1]);

  // Epilogue: biases and their noise (outputs oc..oc+3 are one aligned Philox block), activation, store.
  const int64_t oc = o0 + tx * 4;
  T bias_v[4] = {T(0), T(0), T(0), T(0)}, bias_e[4] = {T(0), T(0), T(0), T(0)};
#pragma unroll
  for (int k = 0; k < 2; ++k) {
    if (p.bias[k] == nullptr || oc >= p.out) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (oc + j < p.out) bias_v[j] += p.bias[k][oc + j];
    if (slot.noisy) {
      NoiseKey key = p.key;
      key.stream = p.bias_stream[k];
      const Normal4 z = noise_block(key, slot.id, static_cast<uint32_t>(oc >> 2));
#pragma unroll
      for (int j = 0; j < 4; ++j) bias_e[j] += static_cast<T>(slot.sign) * p.sigma * static_cast<T>(z.z[j]);
    }
  }
#pragma unroll
  for (int i = 0; i < TB; ++i) {
    const int64_t b = b0 + ty * TB + i;
    if (b >= p.rows) continue;
    T* ya = p.y + slot.a * p.y_member + b * p.y_row;
#pragma unroll
    for (int j = 0; j < 4; ++j)
      if (oc + j < p.out) ya[oc + j] = activate(acc_a[i][j] + bias_v[j] + bias_e[j], p.activation);
    if (has_b) {
      T* yb = p.y + slot.b * p.y_member + b * p.y_row;
#pragma unroll
      for (int j = 0; j < 4; ++j)
        if (oc + j < p.out) yb[oc + j] = activate(acc_b[i][j] + bias_v[j] - bias_e[j], p.activation);
    }
  }
}

}  // namespace

template <typename T>
void launch_perturbed_matmul(const MatmulParams<T>& p, bool antithetic) {
  const int64_t slots = num_slots(p.first_member, p.members, p.baseline, antithetic);
  if (slots == 0 || p.rows == 0 || p.out == 0) return;
  const bool few_rows = p.rows <= 16;
  const int64_t out_tiles = ceil_div(p.out, 64), row_tiles = ceil_div(p.rows, few_rows ? 16 : 64);
  TORCH_CHECK(out_tiles <= 65535 && row_tiles <= 65535 && slots <= INT32_MAX,
              "perturbed kernel grid too large: ", slots, " noise ids x ", p.out, " outputs x ", p.rows, " rows");
  const dim3 grid(static_cast<unsigned int>(slots), static_cast<unsigned int>(out_tiles),
                  static_cast<unsigned int>(row_tiles));
  const auto stream = at::cuda::getCurrentCUDAStream();
  if (few_rows) {
    if (antithetic) {
      perturbed_matmul_kernel<T, 1, true><<<grid, kThreads, 0, stream>>>(p);
    } else {
      perturbed_matmul_kernel<T, 1, false><<<grid, kThreads, 0, stream>>>(p);
    }
  } else {
    if (antithetic) {
      perturbed_matmul_kernel<T, 4, true><<<grid, kThreads, 0, stream>>>(p);
    } else {
      perturbed_matmul_kernel<T, 4, false><<<grid, kThreads, 0, stream>>>(p);
    }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void launch_perturbed_matmul<float>(const MatmulParams<float>& p, bool antithetic);
template void launch_perturbed_matmul<double>(const MatmulParams<double>& p, bool antithetic);

}  // namespace cuda
}  // namespace dopamine_fast
