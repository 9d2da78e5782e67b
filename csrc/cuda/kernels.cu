// CUDA kernels of the dopamine_fast_C ops. Noise is regenerated from (seed, step, stream, id, element) as
// docs/noise.md specifies and never stored per member: full-rank kernels rebuild each tile of eps in shared
// memory, low-rank paths keep only the factors ((out + in) * rank normals per noise id).
#include <ATen/ATen.h>
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "../ops.h"

namespace dopamine_fast {
namespace {

constexpr int kThreads = 256;

// ------------------------------------------------------------------------------------------------ helpers

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// Blocks for a grid-stride loop over `total` items: enough to fill the device, no more.
unsigned int grid_for(int64_t total) {
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(ceil_div(total, kThreads), sms * 32)));
}

at::ScalarType compute_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

NoiseKey key_for(int64_t seed, int64_t step, int64_t stream) { return make_noise_key(seed, step, stream); }

NoiseKey with_stream(NoiseKey key, int64_t stream) {
  key.stream = static_cast<uint32_t>(stream);
  return key;
}

template <typename T>
__device__ __forceinline__ T activate(T v, int act) {
  switch (act) {
    case static_cast<int>(Activation::kTanh):
      if constexpr (std::is_same<T, float>::value) return tanhf(v);
      else return tanh(v);
    case static_cast<int>(Activation::kRelu):
      return v < T(0) ? T(0) : v;  // NaN stays NaN, as torch.relu
    case static_cast<int>(Activation::kSigmoid):
      if constexpr (std::is_same<T, float>::value) return 1.0f / (1.0f + expf(-v));
      else return 1.0 / (1.0 + exp(-v));
    default:
      return v;
  }
}

// Lane q (0..3) of a block without a run-time index into the array (which would spill it to local memory).
__device__ __forceinline__ float lane(const Normal4& n, int q) {
  return q == 0 ? n.z[0] : q == 1 ? n.z[1] : q == 2 ? n.z[2] : n.z[3];
}

// Normals of elements e0 .. e0+3 of one stream; only the first `valid` are needed. An unaligned run spans
// two Philox blocks.
__device__ __forceinline__ void normals4(const NoiseKey& key, uint32_t id, int64_t e0, int64_t valid, float (&z)[4]) {
  const uint32_t blk = static_cast<uint32_t>(e0 >> 2);
  const int shift = static_cast<int>(e0 & 3);
  const Normal4 a = noise_block(key, id, blk);
  if (shift == 0) {
#pragma unroll
    for (int l = 0; l < 4; ++l) z[l] = a.z[l];
    return;
  }
  Normal4 b = a;
  if (valid > 4 - shift) b = noise_block(key, id, blk + 1);
#pragma unroll
  for (int l = 0; l < 4; ++l) z[l] = shift + l < 4 ? lane(a, shift + l) : lane(b, shift + l - 4);
}

// ------------------------------------------------------------------------------------- noise_, noise_bits_

// One thread per block of four elements of one row (noise id) of the contiguous [rows, numel] output.
// `vec`: float rows of a multiple of 4 elements from a 16-byte aligned start take one 16-byte store per block.
template <typename T>
__global__ void noise_kernel(T* out, int64_t rows, int64_t numel, NoiseKey key, uint32_t first_id, bool vec) {
  const int64_t blocks = ceil_div(numel, 4);
  const int64_t total = rows * blocks;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = t / blocks, blk = t - row * blocks;
    const Normal4 z = noise_block(key, first_id + static_cast<uint32_t>(row), static_cast<uint32_t>(blk));
    T* dst = out + row * numel + blk * 4;
    if constexpr (std::is_same<T, float>::value) {
      if (vec) {
        *reinterpret_cast<float4*>(dst) = make_float4(z.z[0], z.z[1], z.z[2], z.z[3]);
        continue;
      }
    }
    const int n = static_cast<int>(min64(4, numel - blk * 4));
#pragma unroll
    for (int l = 0; l < 4; ++l)  // constant indices keep z in registers
      if (l < n) dst[l] = static_cast<T>(z.z[l]);
  }
}

__global__ void noise_bits_kernel(int64_t* out, int64_t rows, int64_t numel, NoiseKey key, uint32_t first_id) {
  const int64_t blocks = ceil_div(numel, 4);
  const int64_t total = rows * blocks;
  for (int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = t / blocks, blk = t - row * blocks;
    const Philox4 w = noise_block_bits(key, first_id + static_cast<uint32_t>(row), static_cast<uint32_t>(blk));
    int64_t* dst = out + row * numel + blk * 4;
    const int n = static_cast<int>(min64(4, numel - blk * 4));
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) dst[l] = static_cast<int64_t>(w.x[l]);
  }
}

// Fills the contiguous 2-D tensor `out` with the normals of ids first_id.. of `key`.
void fill_normals(const at::Tensor& out, const NoiseKey& key, int64_t first_id) {
  const int64_t rows = out.size(0), numel = out.size(1);
  if (rows == 0 || numel == 0) return;
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "noise_", [&] {
    const bool vec = numel % 4 == 0 && reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 == 0;
    noise_kernel<scalar_t><<<grid_for(rows * ceil_div(numel, 4)), kThreads, 0, stream>>>(
        out.data_ptr<scalar_t>(), rows, numel, key, static_cast<uint32_t>(first_id), vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// Normals of ids first_id .. first_id+ids-1 as a new [ids, numel] tensor.
at::Tensor normals(int64_t ids, int64_t numel, const NoiseKey& key, int64_t first_id, const at::TensorOptions& opts) {
  at::Tensor v = at::empty({ids, numel}, opts);
  fill_normals(v, key, first_id);
  return v;
}

void noise_cuda(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id) {
  check_noise_out(out, seed, step, stream, first_id, /*bits=*/false);
  TORCH_CHECK(out.is_cuda(), "out must be a CUDA tensor, got ", out.device());
  const c10::cuda::CUDAGuard guard(out.device());
  at::Tensor dst = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  fill_normals(dst, key_for(seed, step, stream), first_id);
  if (!dst.is_same(out)) out.copy_(dst);
}

void noise_bits_cuda(const at::Tensor& out, int64_t seed, int64_t step, int64_t stream, int64_t first_id) {
  check_noise_out(out, seed, step, stream, first_id, /*bits=*/true);
  TORCH_CHECK(out.is_cuda(), "out must be a CUDA tensor, got ", out.device());
  const c10::cuda::CUDAGuard guard(out.device());
  at::Tensor dst = out.is_contiguous() ? out : at::empty(out.sizes(), out.options());
  const int64_t rows = dst.size(0), numel = dst.size(1);
  if (rows > 0 && numel > 0) {
    noise_bits_kernel<<<grid_for(rows * ceil_div(numel, 4)), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        dst.data_ptr<int64_t>(), rows, numel, key_for(seed, step, stream), static_cast<uint32_t>(first_id));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (!dst.is_same(out)) out.copy_(dst);
}

// ------------------------------------------------------------------------- members and noise-id slots

// Noise id and sign of every member, as device tensors: ids int64 [M], signs [M] in the compute dtype.
template <typename T>
__global__ void member_table_kernel(int64_t* ids, T* signs, int64_t members, bool baseline, bool antithetic) {
  const int64_t m = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (m >= members) return;
  const MemberNoise mn = member_noise(m, baseline, antithetic);
  ids[m] = mn.id;
  signs[m] = static_cast<T>(mn.sign);
}

struct MemberTable {
  at::Tensor ids, signs;
};

MemberTable member_table(int64_t members, bool baseline, bool antithetic, const at::TensorOptions& opts) {
  MemberTable t{at::empty({members}, opts.dtype(at::kLong)), at::empty({members}, opts)};
  AT_DISPATCH_FLOATING_TYPES(opts.dtype().toScalarType(), "member_table", [&] {
    const auto blocks = static_cast<unsigned int>(ceil_div(members, kThreads));
    member_table_kernel<scalar_t><<<blocks, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        t.ids.data_ptr<int64_t>(), t.signs.data_ptr<scalar_t>(), members, baseline, antithetic);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return t;
}

// A CTA of the full-rank kernel serves one noise id: the members that share it (one, or an antithetic pair
// with signs + and -), or the unperturbed baseline member (slot 0 when `baseline`).
struct Slot {
  int64_t a, b;  // members; b < 0 when the slot has one member
  uint32_t id;
  bool noisy;
};

__device__ __forceinline__ Slot slot_of(int64_t q, int64_t members, bool baseline, bool antithetic) {
  if (baseline && q == 0) return Slot{0, -1, 0u, false};
  const int64_t j = q - (baseline ? 1 : 0);
  const int64_t first = baseline ? 1 : 0;
  if (!antithetic) return Slot{first + j, -1, static_cast<uint32_t>(j), true};
  const int64_t a = first + 2 * j;
  return Slot{a, a + 1 < members ? a + 1 : -1, static_cast<uint32_t>(j), true};
}

int64_t num_slots(int64_t members, bool baseline, bool antithetic) {
  return (baseline ? 1 : 0) + num_noise_ids(members, baseline, antithetic);
}

// ---------------------------------------------------------------- full rank: y_m = act(x_m Wp_m^T + b_m)

// One operand pair of the reduction: rows of x (per member, or shared) against a weight [out, in] whose
// perturbation is regenerated from `stream`. An RNN step has two: (x_t, W_ih) and (h_{t-1}, W_hh).
template <typename T>
struct Segment {
  const T* x;        // element (m, b, i) at x[m * x_member + b * x_row + i]
  int64_t x_member;  // 0 when every member reads the same rows
  int64_t x_row;
  const T* w;  // [out, in], contiguous
  int64_t in;
  uint32_t stream;
};

template <typename T>
struct MatmulParams {
  Segment<T> seg[2];
  int num_seg;
  const T* bias[2];  // nullptr when absent; each gets its own full-rank noise
  uint32_t bias_stream[2];
  T* y;  // element (m, b, o) at y[m * y_member + b * y_row + o]
  int64_t y_member, y_row;
  int64_t rows, out, members;
  NoiseKey key;  // seed and step; the stream comes from each segment and bias
  T sigma;
  bool baseline;
  int activation;
};

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

  const Slot slot = slot_of(blockIdx.x, p.members, p.baseline, PAIR);
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
              if (i + l < sg.in) ev[l] = p.sigma * static_cast<T>(z[l]);
          }
        }
#pragma unroll
        for (int l = 0; l < 4; ++l) {
          if constexpr (PAIR) {
            ws[gc + l][gr] = wv[l];
            es[gc + l][gr] = ev[l];
          } else {
            ws[gc + l][gr] = wv[l] + ev[l];  // single-member slots have sign +1 (or no noise)
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
      for (int j = 0; j < 4; ++j) bias_e[j] += p.sigma * static_cast<T>(z.z[j]);
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

template <typename T>
void launch_perturbed_matmul(const MatmulParams<T>& p, bool antithetic) {
  const int64_t slots = num_slots(p.members, p.baseline, antithetic);
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

template <typename T>
Segment<T> segment(const at::Tensor& x, int64_t x_member, int64_t x_row, int64_t x_offset, const at::Tensor& w,
                   int64_t stream) {
  return Segment<T>{x.data_ptr<T>() + x_offset, x_member, x_row, w.data_ptr<T>(), w.size(1),
                    static_cast<uint32_t>(stream)};
}

template <typename T>
MatmulParams<T> base_params(const std::optional<at::Tensor>& b0, int64_t s0, const std::optional<at::Tensor>& b1,
                            int64_t s1, const NoiseKey& key, double sigma, int64_t members, bool baseline, int act) {
  MatmulParams<T> p{};
  p.bias[0] = b0.has_value() ? b0->data_ptr<T>() : nullptr;
  p.bias[1] = b1.has_value() ? b1->data_ptr<T>() : nullptr;
  p.bias_stream[0] = static_cast<uint32_t>(s0);
  p.bias_stream[1] = static_cast<uint32_t>(s1);
  p.key = key;
  p.sigma = static_cast<T>(sigma);
  p.members = members;
  p.baseline = baseline;
  p.activation = act;
  return p;
}

// ------------------------------------------------------------ epilogue of the low-rank (cuBLAS) paths

template <typename T>
struct EpilogueArgs {
  const T* src;  // [members, rows, n], contiguous
  const T* add;  // optional: element (m, b, o) at add[m * add_member + b * add_row + o]
  int64_t add_member, add_row;
  const T* bias;  // optional: [members, n], contiguous
  T* dst;         // element (m, b, o) at dst[m * dst_member + b * dst_row + o]
  int64_t dst_member, dst_row;
  int64_t members, rows, n;
  int activation;
};

template <typename T>
__global__ void epilogue_kernel(const EpilogueArgs<T> a) {
  const int64_t total = a.members * a.rows * a.n;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = idx % a.n, mb = idx / a.n;
    const int64_t b = mb % a.rows, m = mb / a.rows;
    T v = a.src[idx];
    if (a.add != nullptr) v += a.add[m * a.add_member + b * a.add_row + o];
    if (a.bias != nullptr) v += a.bias[m * a.n + o];
    a.dst[m * a.dst_member + b * a.dst_row + o] = activate(v, a.activation);
  }
}

template <typename T>
void launch_epilogue(const EpilogueArgs<T>& a) {
  const int64_t total = a.members * a.rows * a.n;
  if (total == 0) return;
  epilogue_kernel<T><<<grid_for(total), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(a);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Bias of every member, [M, n]: sum of the biases plus s_m sigma times the sum of their noise; undefined
// when there is no bias.
at::Tensor member_biases(const std::optional<at::Tensor>& b0, int64_t s0, const std::optional<at::Tensor>& b1,
                         int64_t s1, const NoiseKey& key, double sigma, int64_t members, int64_t n_ids,
                         const MemberTable& table) {
  at::Tensor sum, noise;
  for (const auto& [b, s] : {std::make_pair(&b0, s0), std::make_pair(&b1, s1)}) {
    if (!b->has_value()) continue;
    const at::Tensor& bias = **b;
    sum = sum.defined() ? sum + bias : bias;
    if (n_ids > 0) {
      at::Tensor e = normals(n_ids, bias.size(0), with_stream(key, s), 0, bias.options());
      noise = noise.defined() ? noise + e : e;
    }
  }
  if (!sum.defined()) return sum;
  if (!noise.defined()) return sum.expand({members, sum.size(0)}).contiguous();
  return (sum + (table.signs * sigma).unsqueeze(1) * noise.index_select(0, table.ids)).contiguous();
}

// Factors of the low-rank noise of a weight [out, in] for noise ids 0..n-1: A [n, out, r], B [n, in, r].
std::pair<at::Tensor, at::Tensor> low_rank_factors(int64_t out, int64_t in, int64_t rank, int64_t n_ids,
                                                   const NoiseKey& key, const at::TensorOptions& opts) {
  const at::Tensor v = normals(n_ids, (out + in) * rank, key, 0, opts);
  return {v.narrow(1, 0, out * rank).view({n_ids, out, rank}), v.narrow(1, out * rank, in * rank).view({n_ids, in, rank})};
}

// x B_j for every member: [M, rows, r]. Shared rows take one GEMM against every id's factor at once.
at::Tensor project_rows(const at::Tensor& x, bool shared, const at::Tensor& factor_b, const MemberTable& table) {
  const int64_t n = factor_b.size(0), in = factor_b.size(1), r = factor_b.size(2);
  if (shared) {
    const at::Tensor t = at::matmul(x, factor_b.permute({1, 0, 2}).reshape({in, n * r}));  // [rows, n*r]
    return t.view({x.size(0), n, r}).permute({1, 0, 2}).index_select(0, table.ids);
  }
  return at::bmm(x, factor_b.index_select(0, table.ids));
}

// ------------------------------------------------------------------------------------- perturbed_linear

at::Tensor perturbed_linear_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                 int64_t seed, int64_t step, int64_t weight_stream, int64_t bias_stream, double sigma,
                                 int64_t num_members, int64_t rank, bool baseline, bool antithetic,
                                 c10::string_view activation) {
  check_perturbed_linear_args(x, weight, bias, seed, step, weight_stream, bias_stream, sigma, num_members, rank);
  TORCH_CHECK(weight.is_cuda(), "weight must be a CUDA tensor, got ", weight.device());
  const int act = static_cast<int>(parse_activation(std::string(activation), /*allowed_rnn=*/false));
  const c10::cuda::CUDAGuard guard(weight.device());
  const auto ct = compute_type(weight.scalar_type());
  const auto opts = weight.options().dtype(ct);
  const at::Tensor w = weight.to(ct).contiguous();
  const at::Tensor xc = x.to(ct).contiguous();
  const std::optional<at::Tensor> b =
      bias.has_value() ? std::optional<at::Tensor>(bias->to(ct).contiguous()) : std::nullopt;
  const bool shared = x.dim() == 2;
  const int64_t M = num_members, rows = x.size(-2), out = w.size(0), in = w.size(1);
  const NoiseKey key = key_for(seed, step, weight_stream);
  at::Tensor y;

  if (rank == 0) {
    y = at::empty({M, rows, out}, opts);
    AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_linear", [&] {
      MatmulParams<scalar_t> p =
          base_params<scalar_t>(b, bias_stream, std::nullopt, 0, key, sigma, M, baseline, act);
      p.seg[0] = segment<scalar_t>(xc, shared ? 0 : rows * in, in, 0, w, weight_stream);
      p.num_seg = 1;
      p.y = y.data_ptr<scalar_t>();
      p.y_member = rows * out;
      p.y_row = out;
      p.rows = rows;
      p.out = out;
      launch_perturbed_matmul(p, antithetic);
    });
  } else {
    // x (W + s sigma A B^T / sqrt(r))^T = x W^T + (s sigma / sqrt(r)) (x B) A^T: cuBLAS does both products.
    const int64_t n_ids = num_noise_ids(M, baseline, antithetic);
    const MemberTable table = member_table(M, baseline, antithetic, opts);
    const at::Tensor base = at::matmul(xc, w.t()).expand({M, rows, out});
    if (n_ids == 0) {
      y = base.contiguous();
    } else {
      const auto [fa, fb] = low_rank_factors(out, in, rank, n_ids, key, opts);
      const at::Tensor t = project_rows(xc, shared, fb, table) *
                           (table.signs * (sigma / std::sqrt(static_cast<double>(rank)))).view({M, 1, 1});
      y = at::baddbmm(base, t, fa.index_select(0, table.ids).transpose(1, 2));
    }
    const at::Tensor bm = member_biases(b, bias_stream, std::nullopt, 0, key, sigma, M, n_ids, table);
    if (bm.defined() || act != static_cast<int>(Activation::kNone)) {
      AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_linear", [&] {
        EpilogueArgs<scalar_t> a{};
        a.src = y.data_ptr<scalar_t>();
        a.bias = bm.defined() ? bm.data_ptr<scalar_t>() : nullptr;
        a.dst = y.data_ptr<scalar_t>();
        a.dst_member = rows * out;
        a.dst_row = out;
        a.members = M;
        a.rows = rows;
        a.n = out;
        a.activation = act;
        launch_epilogue(a);
      });
    }
  }
  return y.scalar_type() == weight.scalar_type() ? y : y.to(weight.scalar_type());
}

// ---------------------------------------------------------------------------------------- perturbed_rnn

at::Tensor perturbed_rnn_cuda(const at::Tensor& x, const std::optional<at::Tensor>& h0, const at::Tensor& weight_ih,
                              const at::Tensor& weight_hh, const std::optional<at::Tensor>& bias_ih,
                              const std::optional<at::Tensor>& bias_hh, int64_t seed, int64_t step,
                              c10::IntArrayRef streams, double sigma, int64_t num_members, int64_t rank, bool baseline,
                              bool antithetic, c10::string_view nonlinearity, bool return_sequence) {
  check_perturbed_rnn_args(x, h0, weight_ih, weight_hh, bias_ih, bias_hh, seed, step, streams, sigma, num_members,
                           rank);
  TORCH_CHECK(weight_hh.is_cuda(), "weight_hh must be a CUDA tensor, got ", weight_hh.device());
  const int act = static_cast<int>(parse_activation(std::string(nonlinearity), /*allowed_rnn=*/true));
  const c10::cuda::CUDAGuard guard(weight_hh.device());
  const auto ct = compute_type(weight_hh.scalar_type());
  const auto opts = weight_hh.options().dtype(ct);
  auto conv = [&](const std::optional<at::Tensor>& t) {
    return t.has_value() ? std::optional<at::Tensor>(t->to(ct).contiguous()) : std::nullopt;
  };
  const at::Tensor wih = weight_ih.to(ct).contiguous(), whh = weight_hh.to(ct).contiguous();
  const at::Tensor xc = x.to(ct).contiguous();
  const std::optional<at::Tensor> h0c = conv(h0), bih = conv(bias_ih), bhh = conv(bias_hh);
  const bool shared = x.dim() == 3;
  const int64_t M = num_members, B = x.size(-3), T = x.size(-2), in = wih.size(1), H = whh.size(0);
  const NoiseKey key = key_for(seed, step, streams[0]);
  const bool h0_shared = h0c.has_value() && h0c->dim() == 2;

  at::Tensor out = return_sequence ? at::empty({M, B, T, H}, opts) : at::empty({M, B, H}, opts);
  if (T == 0) {
    if (!return_sequence) {
      if (h0c.has_value()) {
        out.copy_(h0c->expand({M, B, H}));
      } else {
        out.zero_();
      }
    }
    return out.scalar_type() == weight_hh.scalar_type() ? out : out.to(weight_hh.scalar_type());
  }
  // Where step t writes h_t: a slice of the sequence, or one of two buffers (the last step lands in `out`).
  const at::Tensor spare = return_sequence ? at::Tensor() : at::empty({M, B, H}, opts);
  auto target = [&](int64_t t) -> at::Tensor {
    if (return_sequence) return out.select(2, t);
    return (T - 1 - t) % 2 == 0 ? out : spare;
  };

  if (rank == 0) {
    // One launch per step: both products (x_t W_ih^T and h W_hh^T) reduce in the same CTA, the noise of both
    // weights regenerated tile by tile, so nothing of size K x P is ever stored.
    AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_rnn", [&] {
      for (int64_t t = 0; t < T; ++t) {
        MatmulParams<scalar_t> p =
            base_params<scalar_t>(bih, streams[2], bhh, streams[3], key, sigma, M, baseline, act);
        p.seg[0] = segment<scalar_t>(xc, shared ? 0 : B * T * in, T * in, t * in, wih, streams[0]);
        p.num_seg = 1;
        if (t > 0) {
          const at::Tensor prev = target(t - 1);
          p.seg[1] = segment<scalar_t>(prev, prev.stride(0), prev.stride(1), 0, whh, streams[1]);
          p.num_seg = 2;
        } else if (h0c.has_value()) {
          p.seg[1] = segment<scalar_t>(*h0c, h0_shared ? 0 : B * H, H, 0, whh, streams[1]);
          p.num_seg = 2;
        }
        const at::Tensor dst = target(t);
        p.y = dst.data_ptr<scalar_t>();
        p.y_member = dst.stride(0);
        p.y_row = dst.stride(1);
        p.rows = B;
        p.out = H;
        launch_perturbed_matmul(p, antithetic);
      }
    });
  } else {
    // Low rank: per step h W_hh^T (one GEMM over all members' rows), plus one batched GEMM that applies both
    // corrections at once: [t_ih, t_hh] [A_ih, A_hh]^T with t = s sigma / sqrt(r) (x B).
    const int64_t n_ids = num_noise_ids(M, baseline, antithetic);
    const MemberTable table = member_table(M, baseline, antithetic, opts);
    const at::Tensor bm = member_biases(bih, streams[2], bhh, streams[3], key, sigma, M, n_ids, table);
    at::Tensor fb_ih, fb_hh, a_cat, coef;
    if (n_ids > 0) {
      const auto [a_ih, b_ih] = low_rank_factors(H, in, rank, n_ids, with_stream(key, streams[0]), opts);
      const auto [a_hh, b_hh] = low_rank_factors(H, H, rank, n_ids, with_stream(key, streams[1]), opts);
      fb_ih = shared ? b_ih : b_ih.index_select(0, table.ids);
      fb_hh = b_hh.index_select(0, table.ids);
      a_cat = at::cat({a_ih.index_select(0, table.ids), a_hh.index_select(0, table.ids)}, 2).transpose(1, 2);
      coef = (table.signs * (sigma / std::sqrt(static_cast<double>(rank)))).view({M, 1, 1});
    }
    // Input projections: shared rows need no member axis, so all steps at once; per-member rows step by step.
    const at::Tensor xw_all = shared ? at::matmul(xc, wih.t()) : at::Tensor();  // [B, T, H]
    at::Tensor h = h0c.has_value() ? h0c->expand({M, B, H}) : at::zeros({M, B, H}, opts);
    for (int64_t t = 0; t < T; ++t) {
      const at::Tensor x_t = shared ? xc.select(1, t) : xc.select(2, t);  // [B, in] or [M, B, in]
      at::Tensor pre = at::matmul(h, whh.t()).contiguous();              // [M, B, H]
      if (n_ids > 0) {
        const at::Tensor t_ih = shared ? project_rows(x_t, true, fb_ih, table) : at::bmm(x_t, fb_ih);
        pre.baddbmm_(at::cat({t_ih, at::bmm(h, fb_hh)}, 2) * coef, a_cat);
      }
      const at::Tensor xw = shared ? xw_all.select(1, t) : at::matmul(x_t, wih.t());
      const at::Tensor dst = target(t);
      AT_DISPATCH_FLOATING_TYPES(ct, "perturbed_rnn", [&] {
        EpilogueArgs<scalar_t> a{};
        a.src = pre.data_ptr<scalar_t>();
        a.add = xw.data_ptr<scalar_t>();
        a.add_member = shared ? 0 : xw.stride(0);
        a.add_row = shared ? xw.stride(0) : xw.stride(1);
        a.bias = bm.defined() ? bm.data_ptr<scalar_t>() : nullptr;
        a.dst = dst.data_ptr<scalar_t>();
        a.dst_member = dst.stride(0);
        a.dst_row = dst.stride(1);
        a.members = M;
        a.rows = B;
        a.n = H;
        a.activation = act;
        launch_epilogue(a);
      });
      h = dst;
    }
  }
  return out.scalar_type() == weight_hh.scalar_type() ? out : out.to(weight_hh.scalar_type());
}

// ------------------------------------------------------------------------------------------- rpe_update_

// Full rank, one thread per block of four elements: acc = sum over ids j in this CTA row's group of
// c_j eps_j. With one group it updates the parameter directly; with several it writes its partial sum and
// rpe_finalize_kernel adds the groups in a fixed order (deterministic, no atomics).
template <typename T, typename A>
__global__ void rpe_full_kernel(T* param, A* partial, int64_t numel, const A* coeffs, int64_t n_ids,
                                int64_t ids_per_group, NoiseKey key, A alpha) {
  const int64_t blk = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t e0 = blk * 4;
  if (e0 >= numel) return;
  const int64_t j0 = blockIdx.y * ids_per_group, j1 = min64(n_ids, j0 + ids_per_group);
  A acc[4] = {A(0), A(0), A(0), A(0)};
  for (int64_t j = j0; j < j1; ++j) {
    const A c = coeffs[j];
    const Normal4 z = noise_block(key, static_cast<uint32_t>(j), static_cast<uint32_t>(blk));
#pragma unroll
    for (int l = 0; l < 4; ++l) acc[l] += c * static_cast<A>(z.z[l]);
  }
  const int n = static_cast<int>(min64(4, numel - e0));
  if (partial != nullptr) {
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) partial[blockIdx.y * numel + e0 + l] = acc[l];
  } else {
#pragma unroll
    for (int l = 0; l < 4; ++l)
      if (l < n) param[e0 + l] = static_cast<T>(static_cast<A>(param[e0 + l]) + alpha * acc[l]);
  }
}

template <typename T, typename A>
__global__ void rpe_finalize_kernel(T* param, const A* partial, int64_t numel, int64_t groups, A alpha) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < numel;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    A s = A(0);
    for (int64_t g = 0; g < groups; ++g) s += partial[g * numel + e];
    param[e] = static_cast<T>(static_cast<A>(param[e]) + alpha * s);
  }
}

void rpe_full(const at::Tensor& param, const at::Tensor& coeffs, const NoiseKey& key, double alpha) {
  at::Tensor work = param.is_contiguous() ? param : param.contiguous();
  const int64_t numel = work.numel(), n_ids = coeffs.numel();
  const int64_t blocks = ceil_div(numel, 4);
  // Split the ids over CTA rows only when the parameter alone cannot fill the device.
  const int64_t target = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 2048;
  int64_t groups = std::min({ceil_div(target, blocks), ceil_div(n_ids, 8), int64_t{65535}});
  groups = std::max<int64_t>(groups, 1);
  const int64_t per_group = ceil_div(n_ids, groups);
  groups = ceil_div(n_ids, per_group);
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, work.scalar_type(), "rpe_update_", [&] {
    using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
    const at::Tensor c = coeffs.to(c10::CppTypeToScalarType<acc_t>::value).contiguous();
    at::Tensor partial;
    if (groups > 1) partial = at::empty({groups, numel}, c.options());
    const dim3 grid(static_cast<unsigned int>(ceil_div(blocks, kThreads)), static_cast<unsigned int>(groups));
    rpe_full_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
        work.data_ptr<scalar_t>(), groups > 1 ? partial.data_ptr<acc_t>() : nullptr, numel, c.data_ptr<acc_t>(), n_ids,
        per_group, key, static_cast<acc_t>(alpha));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (groups > 1) {
      rpe_finalize_kernel<scalar_t, acc_t><<<grid_for(numel), kThreads, 0, stream>>>(
          work.data_ptr<scalar_t>(), partial.data_ptr<acc_t>(), numel, groups, static_cast<acc_t>(alpha));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  if (!work.is_same(param)) param.copy_(work);
}

// Low rank: sum_j c_j A_j B_j^T = [c_j A_j]_j [B_j]_j^T, one GEMM of stacked factors per chunk of ids.
void rpe_low_rank(const at::Tensor& param, const at::Tensor& coeffs, const NoiseKey& key, int64_t rank,
                  double alpha) {
  const auto ct = compute_type(param.scalar_type());
  const auto opts = param.options().dtype(ct);
  const int64_t out = param.size(0), in = param.numel() / std::max<int64_t>(out, 1), n_ids = coeffs.numel();
  const at::Tensor c = coeffs.to(ct);
  at::Tensor total = at::zeros({out, in}, opts);
  const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 24) / std::max<int64_t>(1, (out + in) * rank));
  for (int64_t j0 = 0; j0 < n_ids; j0 += chunk) {
    const int64_t nc = std::min(chunk, n_ids - j0);
    const at::Tensor v = normals(nc, (out + in) * rank, key, j0, opts);
    const at::Tensor a = v.narrow(1, 0, out * rank).view({nc, out, rank}) * c.narrow(0, j0, nc).view({nc, 1, 1});
    const at::Tensor b = v.narrow(1, out * rank, in * rank).view({nc, in, rank});
    total.addmm_(a.permute({1, 0, 2}).reshape({out, nc * rank}), b.permute({1, 0, 2}).reshape({in, nc * rank}).t());
  }
  param.add_(total.view(param.sizes()).to(param.scalar_type()), alpha / std::sqrt(static_cast<double>(rank)));
}

void rpe_update_cuda(const at::Tensor& param, const at::Tensor& coeffs, int64_t seed, int64_t step, int64_t stream,
                     int64_t rank, double alpha) {
  check_rpe_update_args(param, coeffs, seed, step, stream, rank);
  TORCH_CHECK(param.is_cuda(), "param must be a CUDA tensor, got ", param.device());
  const c10::cuda::CUDAGuard guard(param.device());
  if (param.numel() == 0 || coeffs.numel() == 0) return;
  const NoiseKey key = key_for(seed, step, stream);
  if (rank == 0 || param.dim() < 2) {
    rpe_full(param, coeffs, key, alpha);
  } else {
    rpe_low_rank(param, coeffs, key, rank, alpha);
  }
}

}  // namespace
}  // namespace dopamine_fast

TORCH_LIBRARY_IMPL(dopamine_fast_C, CUDA, m) {
  // The casts make a signature that differs from the CPU kernels' (ops.h) a compile error, not a load-time abort.
  m.impl("noise_", static_cast<dopamine_fast::NoiseKernel*>(&dopamine_fast::noise_cuda));
  m.impl("noise_bits_", static_cast<dopamine_fast::NoiseKernel*>(&dopamine_fast::noise_bits_cuda));
  m.impl("perturbed_linear", static_cast<dopamine_fast::PerturbedLinearKernel*>(&dopamine_fast::perturbed_linear_cuda));
  m.impl("perturbed_rnn", static_cast<dopamine_fast::PerturbedRnnKernel*>(&dopamine_fast::perturbed_rnn_cuda));
  m.impl("rpe_update_", static_cast<dopamine_fast::RpeUpdateKernel*>(&dopamine_fast::rpe_update_cuda));
}
