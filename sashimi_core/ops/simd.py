"""Eight-lane float32 vectors for numba kernels: an LLVM `<8 x float>` value type and a few intrinsics.

numba vectorises simple loops, but not register tiles (several accumulators held across a reduction loop),
which is what a small matrix product needs to reach the FMA peak. With `f32x8` values a kernel can spell the
tile out; locals of this type live in registers (AVX2: one ymm each; on narrower SIMD LLVM splits them).

    acc = vload(bias, j)                      # 8 consecutive float32 from a 1D array at index j
    acc = vfma(vsplat(x[i]), vload(w, o), acc)
    vstore(y, j, acc)

Loads and stores are unaligned and unchecked: the caller keeps `index + 8 <= len(array)`.
numba's on-disk cache does not notice edits to this file: delete `sashimi_core/__pycache__/*.nb[ci]` after one.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

_V8 = ir.VectorType(ir.FloatType(), 8)


class F32x8(types.Type):
    def __init__(self):
        super().__init__(name="f32x8")


f32x8 = F32x8()


@register_model(F32x8)
class _F32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _V8)


def _float32_row(array, index) -> bool:
    """Typing guard: a 1D float32 array (anything else would be reinterpreted, not converted) and an integer."""
    return (isinstance(array, types.Array) and array.ndim == 1 and array.dtype == types.float32
            and isinstance(index, types.Integer))


def _vector_ptr(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), _V8.as_pointer())


@intrinsic
def vload(typingctx, array, index):
    """array[index: index + 8] as a vector (1D contiguous float32 array)."""
    if not _float32_row(array, index):
        return None

    def codegen(context, builder, sig, args):
        return builder.load(_vector_ptr(context, builder, sig.args[0], *args), align=4)
    return f32x8(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, value):
    """array[index: index + 8] = value."""
    if not (_float32_row(array, index) and value == f32x8):
        return None

    def codegen(context, builder, sig, args):
        builder.store(args[2], _vector_ptr(context, builder, sig.args[0], args[0], args[1]), align=4)
        return context.get_dummy_value()
    return types.none(array, index, value), codegen


@intrinsic
def vsplat(typingctx, x):
    """A scalar (float32 or float64, rounded to float32) in all 8 lanes."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        x = args[0] if sig.args[0] == types.float32 else builder.fptrunc(args[0], ir.FloatType())
        v = builder.insert_element(ir.Constant(_V8, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, ir.Constant(_V8, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))
    return f32x8(x), codegen


def _lanewise(emit, doc, n_args=2):
    """An intrinsic of n_args f32x8 values -> f32x8 whose IR is emit(builder, [values])."""
    def codegen(context, builder, sig, values):
        return emit(builder, list(values))

    if n_args == 2:
        def typer(typingctx, a, b):
            return (f32x8(a, b), codegen) if a == b == f32x8 else None
    else:
        def typer(typingctx, a, b, c):
            return (f32x8(a, b, c), codegen) if a == b == c == f32x8 else None
    typer.__doc__ = doc
    return intrinsic(typer)


def _llvm_call(name, n_args):
    def emit(builder, args):
        return builder.call(cgutils.get_or_insert_function(builder.module, ir.FunctionType(_V8, [_V8] * n_args),
                                                           name), args)
    return emit


vadd = _lanewise(lambda b, a: b.fadd(*a), "a + b")
vsub = _lanewise(lambda b, a: b.fsub(*a), "a - b")
vmul = _lanewise(lambda b, a: b.fmul(*a), "a * b")
vdiv = _lanewise(lambda b, a: b.fdiv(*a), "a / b")
vmin = _lanewise(_llvm_call("llvm.minnum.v8f32", 2), "lane-wise min")
vmax = _lanewise(_llvm_call("llvm.maxnum.v8f32", 2), "lane-wise max")
vfma = _lanewise(_llvm_call("llvm.fma.v8f32", 3), "a * b + c, fused (one rounding)", n_args=3)


@intrinsic
def prefetch(typingctx, array, index):
    """Hint that array[index] will be read soon (llvm.prefetch: read, keep in all cache levels)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        signature = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, signature, "llvm.prefetch.p0i8")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(array, index), codegen
