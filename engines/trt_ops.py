"""What TensorRT's ONNX parser and the DLA accept: the tables behind ``engines.check``.

Sources (checked while writing; re-check when TensorRT moves on):

- Operator table: onnx/onnx-tensorrt ``docs/operators.md`` as of TensorRT 10.15
  ("supports operators in the inclusive range of opset 9 to opset 24").  The
  TensorRT 10.0 version of the same file says opset 9 to 20; JetPack 6 ships
  TensorRT 10.3, whose parser we treat as documented for opset <= 20.
- TensorRT 11.x: NVIDIA's "ONNX Opset Guide" (TensorRT 11.x: ONNX 1.20.0,
  maximum opset 25, minimum 9) and the 10.x -> 11.x migration guide, which
  removes builder flags (FP16/INT8/BF16/FP8, calibrators, quantization flags)
  but lists no ONNX operator removals, so the operator table is shared.
- Q/DQ: the table's rows for QuantizeLinear / DequantizeLinear ("`y_zero_point`
  must be 0", "`x_zero_point` must be zero"); TensorRT's quantization guide
  (symmetric INT8; per-tensor activations, per-channel weights).
- DLA: "DLA Supported Layers and Restrictions" (TensorRT 10.x docs): batch <= 4096,
  non-batch dims <= 8192, no dynamic dims; Convolution/FC 2D with kernel [1,32],
  stride [1,8], channels [1,8192]; Deconvolution 2D, no groups/dilation, zero
  padding; Pooling 2D; Activation ReLU/Sigmoid/TanH/Clipped ReLU/Leaky ReLU;
  ElementWise Sum/Sub/Product/Max/Min/Div/Pow; Concatenation along channels;
  Resize with integer scales in [1,32] on H/W only; FP16/INT8 only (no FP32).
  "TensorRT 10.7 was the last release that supported DLA" before 11.4.1, which
  supports it again on Jetson AGX Orin with JetPack 7.2.2+ (strongly typed).
"""

from __future__ import annotations

# --- opset bounds per target -------------------------------------------------------------
# (min, documented max, hard max): opsets above "documented" but <= "hard" get a warning.
OPSET_BOUNDS = {
    "trt10": (9, 20, 24),   # 10.0 documents <= 20 (JetPack 6 = 10.3); 10.15 documents <= 24
    "dla": (9, 20, 24),     # DLA builds run on Jetson, i.e. JetPack's TensorRT 10.x
    "trt11": (9, 25, 25),   # ONNX Opset Guide, TensorRT 11.x
}

# --- the ONNX operator table (operators.md, TensorRT 10.15) ------------------------------
# Y = parsed by TensorRT's ONNX parser; N = listed as unsupported. Ops absent from the
# table are treated as unsupported too. Restrictions that engines.check verifies are
# coded in check.py; the rest are kept here as notes for the message.
_SUPPORTED = """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant
ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow
HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod
Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RMSNormalization RNN RoiAlign RotaryEmbedding Round STFT ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh TensorScatter
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()

_UNSUPPORTED = """
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor Col2Im
CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear
ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial
NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch SequenceAt SequenceConstruct SequenceEmpty SequenceErase
SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split()

SUPPORTED_OPS = frozenset(_SUPPORTED)
UNSUPPORTED_OPS = frozenset(_UNSUPPORTED)

# Restrictions from the table, quoted for messages (those check.py verifies are marked *).
RESTRICTIONS = {
    "AveragePool": "2D or 3D pooling only; dilations must be empty or all ones (*)",
    "MaxPool": "2D or 3D pooling only; Indices output unsupported; dilations must be all ones (*)",
    "LpPool": "dilations must be empty or all ones",
    "Resize": "modes nearest/linear; transforms half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
              "asymmetric, align_corners; no antialias (*)",
    "QuantizeLinear": "y_zero_point must be 0 (*)",
    "DequantizeLinear": "x_zero_point must be zero (*)",
    "TopK": "sorted must be 1; K < 3840",
    "ScatterND": "reduction other than none is not supported",
    "Dropout": "is_training must be an initializer and evaluate to False",
    "CumSum": "axis must be a build-time constant",
    "OneHot": "depth must be a build-time constant",
    "LayerNormalization": "only the first output Y is supported",
}

RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_TRANSFORMS = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                               "align_corners"})

# Per-target notes on operators (none removed in 11.x per the migration guide).
TARGET_NOTES = {
    "trt11": "TensorRT 11 builds every network strongly typed: precision comes from the file "
             "(FP16 tensors, INT8 Q/DQ); there is no FP16/INT8 builder flag to fall back on.",
}

# --- DLA ---------------------------------------------------------------------------------
DLA_MAX_BATCH = 4096
DLA_MAX_DIM = 8192
DLA_CONV_KERNEL = (1, 32)
DLA_CONV_STRIDE = (1, 8)
DLA_CONV_DILATION = (1, 32)
DLA_CONV_PAD = (0, 31)
DLA_CHANNELS = (1, 8192)
DLA_POOL_WINDOW = (1, 8)
DLA_POOL_STRIDE = (1, 16)
DLA_POOL_PAD = (0, 7)
DLA_RESIZE_SCALE = (1, 32)

# Ops that map to a DLA-capable layer when check.py's parameter checks pass.
DLA_OPS = frozenset("""
Conv ConvTranspose Gemm MatMul Relu Sigmoid Tanh Clip LeakyRelu PRelu BatchNormalization
Add Sub Mul Max Min Div Pow Sum Concat MaxPool AveragePool GlobalAveragePool GlobalMaxPool
Resize Upsample Softmax LRN Abs Sin Cos Atan ReduceMax Equal Greater Less
""".split())

# Ops that vanish at parse time or are fused into neighbours (not layers of their own).
DLA_TRANSPARENT = frozenset("Constant Identity Dropout QuantizeLinear DequantizeLinear Shape".split())

# Ops DLA runs only in limited forms (4-D shuffles, slices): reported as "may fall back".
DLA_LIMITED = {
    "Reshape": "DLA runs shuffles (reshape/transpose) only in limited 4-D forms",
    "Transpose": "DLA runs shuffles (reshape/transpose) only in limited 4-D forms",
    "Flatten": "DLA runs shuffles only in limited 4-D forms",
    "Squeeze": "DLA runs shuffles only in limited 4-D forms",
    "Unsqueeze": "DLA runs shuffles only in limited 4-D forms",
    "Slice": "DLA runs slices only on 4-D tensors, not along the batch axis, with static parameters",
}


def parser_support(op_type: str) -> str:
    """'Y', 'N' or '?' (not in the table) for an ONNX operator of the default domain."""
    if op_type in SUPPORTED_OPS:
        return "Y"
    if op_type in UNSUPPORTED_OPS:
        return "N"
    return "?"
