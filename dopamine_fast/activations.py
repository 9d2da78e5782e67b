"""The activations the perturbed-layer ops take, by name, in the order of their kernel codes (0 none, 1 tanh, ...:
the C++ ``Activation`` enum in ``csrc/ops.h``, the Triton kernels' ``ACTIVATION_CODES``).

A leaf module, so that both ``dopamine_fast.ops`` (the checks) and ``dopamine_fast.backends`` (the kernels) import
it without importing each other.
"""

ACTIVATIONS = ("none", "tanh", "relu", "sigmoid")
NONLINEARITIES = ("tanh", "relu")  # those perturbed_rnn takes
