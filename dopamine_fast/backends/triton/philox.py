"""Philox4x32-10 and Box-Muller in Triton, exactly as docs/noise.md specifies (shared by every Triton kernel).

Triton's own ``tl.randint4x`` puts the offset and seed in other counter words, so the generator is spelled out
here with uint32 arithmetic: ``tl.umulhi`` gives the high word of each product, plain uint32 ``*`` the low one.
Host code passes the key and counter words as ints in [0, 2^32) (see ``counter_words``); kernels turn them into
uint32 with ``as_u32`` whatever type Triton gave the argument.
"""

from __future__ import annotations

import inspect

import triton
import triton.language as tl

PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)
TWO_POW_M24 = tl.constexpr(5.9604644775390625e-08)  # 2^-24
TWO_PI = tl.constexpr(6.283185307179586)

MASK32 = 0xFFFFFFFF
# Arguments that change from call to call: the key and counter words, streams, member and noise ids.
COUNTERS = frozenset({"k0", "k1", "step", "stream", "w_stream", "b_stream", "stream_wih", "stream_whh", "stream_bih",
                      "stream_bhh", "noise_id", "first_id", "first_member"})


def counter_jit(fn):
    """``triton.jit`` that does not specialise the kernel on its ``COUNTERS``.

    Triton compiles an int argument's value 1, and multiples of 16, into separate variants: the optimizer's step
    0, 1 and 2 each compiled the kernels again (on an H200 the paper RNN's second Dopamine step under Triton took
    9-13 s; the CUDA kernels' step takes 46-82 ms).
    """
    return triton.jit(do_not_specialize=[n for n in inspect.signature(fn).parameters if n in COUNTERS])(fn)


def counter_words(seed: int, step: int, stream: int):
    """``(k0, k1, step mod 2^32, stream)``: the key and the counter words shared by a whole tensor's noise."""
    return seed & MASK32, (seed >> 32) & MASK32, step & MASK32, stream & MASK32


@triton.jit
def as_u32(x):
    """A kernel argument holding an int in [0, 2^32) (typed i32, i64 or constexpr by Triton) as a uint32 scalar."""
    return tl.cast(x, tl.uint32)  # tl.cast takes a plain int too (tl.to_tensor is Triton 3.8 only)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """The four output words for counters ``(c0, c1, c2, c3)`` (uint32, broadcastable) and key ``(k0, k1)``."""
    for r in tl.static_range(10):
        if r > 0:
            k0 = k0 + PHILOX_W0
            k1 = k1 + PHILOX_W1
        hi0 = tl.umulhi(c0, PHILOX_M0)
        lo0 = c0 * PHILOX_M0
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo1 = c2 * PHILOX_M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@triton.jit
def box_muller(xa, xb):
    """Two float32 normals ``(r cos, r sin)`` from two uint32 words."""
    u1 = ((xa >> 8) + 1).to(tl.float32) * TWO_POW_M24
    u2 = (xb >> 8).to(tl.float32) * TWO_POW_M24
    r = tl.sqrt(-2.0 * tl.log(u1))
    theta = TWO_PI * u2
    return r * tl.cos(theta), r * tl.sin(theta)


@triton.jit
def block_bits(block, noise_id, step, stream, k0, k1):
    """The four words of element blocks ``block`` (uint32 tensor) of one noise id."""
    zero = tl.zeros(block.shape, tl.uint32)
    return philox4x32_10(block, zero + noise_id, zero + step, zero + stream, k0, k1)


@triton.jit
def block_normals(block, noise_id, step, stream, k0, k1):
    """The four normals (elements ``4*block .. 4*block+3``) of element blocks ``block`` of one noise id."""
    x0, x1, x2, x3 = block_bits(block, noise_id, step, stream, k0, k1)
    z0, z1 = box_muller(x0, x1)
    z2, z3 = box_muller(x2, x3)
    return z0, z1, z2, z3


@triton.jit
def interleave4(a, b, c, d):
    """``[..., N]`` x4 -> ``[..., 4N]`` with ``a[n], b[n], c[n], d[n]`` at ``4n .. 4n+3``: blocks to elements."""
    t = tl.join(tl.join(a, c), tl.join(b, d))  # [..., N, 2, 2]: index (n, j, k) holds lane 2j + k
    return tl.reshape(t, t.shape[:-3] + [4 * t.shape[-3]])


@triton.jit
def element_normals(e, noise_id, step, stream, k0, k1):
    """The normal of each element index ``e`` (int64 tensor, any layout) of one noise id.

    For tiles whose elements are not whole aligned blocks (a matrix row of odd length, low-rank factors): each
    element runs its own block, so a block's words are computed up to four times.
    """
    lane = (e & 3).to(tl.int32)
    x0, x1, x2, x3 = block_bits((e >> 2).to(tl.uint32), noise_id, step, stream, k0, k1)
    upper = lane >= 2
    z_cos, z_sin = box_muller(tl.where(upper, x2, x0), tl.where(upper, x3, x1))
    return tl.where((lane & 1) == 1, z_sin, z_cos)


@triton.jit
def member_noise(m, BASELINE: tl.constexpr, ANTITHETIC: tl.constexpr):
    """Noise id (uint32) and sign (float32, 0 for the unperturbed member) of member ``m``: the Triton copy of
    ``dopamine_fast.plan.member_noise_ids`` (tests/test_member_numbering.py checks it)."""
    p = m - BASELINE
    if ANTITHETIC:
        noise_id = p // 2
        sign = 1.0 - 2.0 * (p % 2).to(tl.float32)
    else:
        noise_id = p
        sign = 1.0
    sign = tl.where(p < 0, 0.0, sign)
    noise_id = tl.where(p < 0, 0, noise_id)
    return noise_id.to(tl.uint32), sign
