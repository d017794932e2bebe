"""The fused path on a GPU: the kernels of kernels.py, written for CuPy arrays in CUDA.

The same four passes as the numba kernels, with the same arguments and results: bias + ReLU
in one pass after the product; the ReLU mask and the bias gradient in one pass; softmax, loss
and gradient per row in one pass; the whole Adam update in one pass (and the gradient's sum of
squares in one reduction). Each is tested equal to the reference path on a GPU
(tests/test_device.py, skipped without one).

Deterministic: every element is written by one thread; the column sums add the rows of fixed
chunks in order and then the chunks in order, and the sums of squares use CuPy's reduction,
which adds in an order fixed by the shape; nothing adds atomically. The kernels are compiled
by CuPy on first use and cached on disk by it (``~/.cupy/kernel_cache``).
"""

from __future__ import annotations

from typing import Any

from .kernels import adam_scalars

_cupy: Any = None
_compiled: dict = {}

# Rows each thread of the column sums adds in order before the chunks are added in order.
ROW_CHUNK = 64
_THREADS = 256

_BIAS_ACTIVATION = (
    "raw T b, int64 columns, bool relu",
    "T z",
    "T value = z + b[i % columns]; z = (relu && value < (T)0) ? (T)0 : value;",  # max(z + b, 0), nan stays nan
)

_ADAM = (
    "T g, T step_size, T beta1, T beta2, T one_minus_beta1, T one_minus_beta2, T inverse_root_correction2, "
    "T eps, T decay, T smallest",
    "T p, T m, T v",
    """
    T m_i = beta1 * m + one_minus_beta1 * g;
    T v_i = beta2 * v + one_minus_beta2 * g * g;
    m_i = (m_i < smallest && m_i > -smallest) ? (T)0 : m_i;  // below the smallest normal number: 0
    v_i = v_i < smallest ? (T)0 : v_i;
    m = m_i;
    v = v_i;
    p = p * decay - step_size * m_i / (sqrt(v_i) * inverse_root_correction2 + eps);
    """,
)

_COLUMN_SUMS = r"""
extern "C" __global__ void column_sums(real_t* grad, const real_t* a, real_t* partial, long long rows,
                                       long long columns, long long chunk, bool relu) {
    long long column = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (column >= columns) return;
    long long start = (long long)blockIdx.y * chunk;
    long long stop = min(rows, start + chunk);
    real_t sum = 0;
    for (long long row = start; row < stop; ++row) {  // rows in order
        long long k = row * columns + column;
        real_t g = grad[k];
        if (relu) {
            g = a[k] > (real_t)0 ? g : g * (real_t)0;  // the ReLU mask
            grad[k] = g;
        }
        sum += g;
    }
    partial[blockIdx.y * columns + column] = sum;
}
"""

_SOFTMAX_CROSS_ENTROPY = r"""
extern "C" __global__ void softmax_cross_entropy(const real_t* logits, const long long* targets,
                                                 const real_t* weights, real_t scale, real_t* grad,
                                                 real_t* row_loss, long long rows, long long classes) {
    long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows) return;
    const real_t* z = logits + i * classes;
    real_t* out = grad + i * classes;
    real_t top = z[0];
    for (long long j = 1; j < classes; ++j) top = z[j] > top ? z[j] : top;
    double total = 0.0;
    for (long long j = 0; j < classes; ++j) {
        real_t shifted = exp(z[j] - top);
        out[j] = shifted;
        total += shifted;
    }
    long long target = targets[i];
    real_t weight = weights[i];
    row_loss[i] = (real_t)((log(total) - (double)(z[target] - top)) * weight);
    real_t factor = (real_t)(weight * scale / total);
    for (long long j = 0; j < classes; ++j) out[j] = out[j] * factor;  // softmax * weight * scale
    out[target] -= weight * scale;  // - onehot * weight * scale
}
"""


def bind(cupy) -> None:
    """Use ``cupy`` (the module the CUDA backend loaded)."""
    global _cupy
    _cupy = cupy


def ready() -> bool:
    """Whether the kernels can run: CuPy loaded with its kernel compilers."""
    return _cupy is not None and hasattr(_cupy, "ElementwiseKernel") and hasattr(_cupy, "RawKernel")


def _kernel(name: str, dtype):
    key = (name, str(dtype))
    kernel = _compiled.get(key)
    if kernel is None:
        cupy = _cupy
        real = {"float32": "float", "float64": "double"}[str(dtype)]
        if name == "bias_activation":
            kernel = cupy.ElementwiseKernel(*_BIAS_ACTIVATION, "dltrain_bias_activation")
        elif name == "adam":
            kernel = cupy.ElementwiseKernel(*_ADAM, "dltrain_adam")
        elif name == "sum_of_squares":
            kernel = cupy.ReductionKernel(
                "T x", "float64 total", "(double)(x * x)", "a + b", "total = a", "0", "dltrain_sum_of_squares"
            )
        else:
            source = _COLUMN_SUMS if name == "column_sums" else _SOFTMAX_CROSS_ENTROPY
            kernel = cupy.RawKernel(f"typedef {real} real_t;\n{source}", name)
        _compiled[key] = kernel
    return kernel


def bias_activation(z, b, relu: bool):
    """z += b, then ReLU when ``relu``, in place: a Dense layer's forward after its product."""
    _kernel("bias_activation", z.dtype)(b, z.shape[1], bool(relu), z)
    return z


def bias_gradient(grad, a, db, relu: bool):
    """db = column sums of dL/dz, where dL/dz is ``grad`` masked by a > 0 when ``relu`` (in place)."""
    cupy = _cupy
    rows, columns = grad.shape
    chunks = max(1, -(-rows // ROW_CHUNK))
    partial = cupy.empty((chunks, columns), dtype=grad.dtype)
    grid = (max(1, -(-columns // _THREADS)), chunks)
    _kernel("column_sums", grad.dtype)(
        grid, (_THREADS,), (grad, a, partial, cupy.int64(rows), cupy.int64(columns), cupy.int64(ROW_CHUNK), bool(relu))
    )
    cupy.sum(partial, axis=0, out=db)  # the chunks in order
    return grad


def softmax_cross_entropy(logits, targets, weights, scale, grad, row_loss):
    """grad = (softmax(logits) - onehot(targets)) * weights * scale; row_loss = each row's
    weighted cross-entropy."""
    cupy = _cupy
    rows, classes = logits.shape
    targets = targets if targets.dtype == cupy.int64 else targets.astype(cupy.int64)
    real = logits.dtype.type
    _kernel("softmax_cross_entropy", logits.dtype)(
        (max(1, -(-rows // _THREADS)),),
        (_THREADS,),
        (logits, targets, weights, real(scale), grad, row_loss, cupy.int64(rows), cupy.int64(classes)),
    )
    return row_loss


def adam(param, grad, m, v, lr, beta1, beta2, eps, step, decay, smallest, partial):
    """One Adam update of a flat array in place (kernels.adam's arithmetic); returns the sum of
    squared gradients as a 0-d array on the device (``partial`` is not needed here)."""
    squares = _kernel("sum_of_squares", grad.dtype)(grad)
    scalars = adam_scalars(param.dtype.type, lr, beta1, beta2, eps, step, decay, smallest)
    _kernel("adam", param.dtype)(grad, *scalars, param, m, v)
    return squares
