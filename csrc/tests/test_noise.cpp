// The CPU kernels of noise_ and noise_bits_ against the scalar generator, on odd shapes, dtypes and a strided view.
#include <ATen/ATen.h>

#include "dispatch.h"
#include "harness.h"
#include "reference.h"

using dopamine_fast::NoiseKernel;

DF_TEST(noise, normals_match_scalar_reference) {
  const df_test::Counter c{(int64_t{7} << 33) + 5, 12, 3};
  for (const auto dtype : {at::kFloat, at::kDouble}) {
    at::Tensor out = at::zeros({5, 37}, at::TensorOptions().dtype(dtype));
    df_test::op<NoiseKernel>("noise_").call(out, c.seed, c.step, c.stream, /*first_id=*/2);
    const auto got = df_test::values(out);
    for (int64_t row = 0; row < 5; ++row) {
      for (int64_t e = 0; e < 37; ++e) {
        DF_CHECK_CLOSE(got[row * 37 + e], df_test::normal(c, 2 + row, e), 1e-5, 1e-5)
            << "row " << row << " element " << e << " dtype " << dtype;
      }
    }
  }
}

DF_TEST(noise, bits_match_scalar_reference_in_a_strided_view) {
  const df_test::Counter c{99, 0, 1};
  at::Tensor base = at::full({3, 2 * 13}, -1, at::TensorOptions().dtype(at::kLong));
  at::Tensor view = base.slice(/*dim=*/1, /*start=*/0, /*end=*/c10::nullopt, /*step=*/2);  // every other column
  df_test::op<NoiseKernel>("noise_bits_").call(view, c.seed, c.step, c.stream, /*first_id=*/0);
  const auto got = base.contiguous();
  const int64_t* g = got.data_ptr<int64_t>();
  for (int64_t row = 0; row < 3; ++row) {
    for (int64_t e = 0; e < 13; ++e) {
      DF_CHECK(g[row * 26 + 2 * e] == df_test::word(c, row, e)) << "row " << row << " element " << e;
      DF_CHECK(g[row * 26 + 2 * e + 1] == -1) << "the kernel wrote outside the view at row " << row;
    }
  }
}
