"""The fused kernels themselves: plain loops over rows that numba compiles, each doing in one pass
what the reference path (layers.py, losses.py, optimizers.py) writes as several NumPy
expressions, and tested equal to it (tests/test_kernels.py). kernels.py decides which version
runs (serial or parallel) and calls them.

Each row is a 1-D view, so the inner loop vectorises. Scalars arrive in the arrays' dtype, so
float32 arrays are computed in float32, as the reference path does. A reduction adds in an order
that depends on the data's shape alone, never on the thread count.
"""

from __future__ import annotations

import math

prange = range  # numba.prange once kernels.py loads numba (a plain range in the serial versions)


def use_prange(parallel_range) -> None:
    """The loops' outer loops run over ``parallel_range`` from their next compilation: numba.prange."""
    global prange
    prange = parallel_range


def bias_loop(z, b):
    rows, columns = z.shape
    for i in prange(rows):
        row = z[i]
        for j in range(columns):
            row[j] += b[j]


def bias_relu_loop(z, b):
    rows, columns = z.shape
    zero = z.dtype.type(0)
    for i in prange(rows):
        row = z[i]
        for j in range(columns):
            value = row[j] + b[j]
            row[j] = zero if value < zero else value  # max(z + b, 0), keeping a nan a nan


def column_sums_loop(grad, a, db, relu, column_block):
    rows, columns = grad.shape
    zero = grad.dtype.type(0)
    for block in prange((columns + column_block - 1) // column_block):
        start = block * column_block
        stop = min(columns, start + column_block)
        sums = db[start:stop]
        sums[:] = zero
        for i in range(rows):  # rows in order: the same sums on any number of threads
            row = grad[i, start:stop]
            if relu:
                mask = a[i, start:stop]
                for j in range(stop - start):
                    value = row[j] if mask[j] > zero else row[j] * zero  # the ReLU mask
                    row[j] = value
                    sums[j] += value
            else:
                for j in range(stop - start):
                    sums[j] += row[j]


def softmax_cross_entropy_loop(logits, targets, weights, scale, grad, row_loss):
    rows, classes = logits.shape
    for i in prange(rows):
        z = logits[i]
        out = grad[i]
        top = z[0]
        for j in range(1, classes):
            top = max(top, z[j])
        total = 0.0
        for j in range(classes):
            shifted = math.exp(z[j] - top)
            out[j] = shifted
            total += shifted
        target = targets[i]
        weight = weights[i]
        row_loss[i] = (math.log(total) - (z[target] - top)) * weight
        factor = weight * scale / total
        for j in range(classes):
            out[j] = out[j] * factor  # softmax * weight * scale
        out[target] -= weight * scale  # - onehot * weight * scale


def adam_loop(
    param,
    grad,
    m,
    v,
    step_size,
    beta1,
    beta2,
    one_minus_beta1,
    one_minus_beta2,
    inverse_root_correction2,
    eps,
    decay,
    smallest,
    partial,
    block_size,
):
    size = param.size
    zero = param.dtype.type(0)
    for block in prange(partial.size):
        start = block * block_size
        stop = min(size, start + block_size)
        p, g, m_, v_ = param[start:stop], grad[start:stop], m[start:stop], v[start:stop]
        squares = 0.0
        for i in range(stop - start):
            squares += g[i] * g[i]
        partial[block] = squares
        for i in range(stop - start):
            m_i = beta1 * m_[i] + one_minus_beta1 * g[i]
            v_i = beta2 * v_[i] + one_minus_beta2 * g[i] * g[i]
            # A moment below the smallest normal number becomes 0 (see ``adam``).
            m_i = zero if abs(m_i) < smallest else m_i
            v_i = zero if v_i < smallest else v_i
            m_[i] = m_i
            v_[i] = v_i
            # lr * m_hat / (sqrt(v_hat) + eps) with one division: the bias corrections are
            # constants folded into step_size = lr / (1 - beta1^t) and 1 / sqrt(1 - beta2^t).
            p[i] = p[i] * decay - step_size * m_i / (math.sqrt(v_i) * inverse_root_correction2 + eps)


# Loops whose sums numba may reorder (in an order fixed by the code and the block, never by the threads).
REORDERED_SUMS = (adam_loop,)
# Loops with one or two additions per element: parallel only from LIGHT_KERNEL_FACTOR times as many (kernels.py).
LIGHT = (bias_loop, bias_relu_loop, column_sums_loop)
