"""What TensorRT's ONNX parser and the DLA accept, per TensorRT version: the tables behind ``engines.check``.

Sources (read while writing; re-check when TensorRT moves on):

- **TensorRT 10.1 (and so 10.3, JetPack 6).** onnx/onnx-tensorrt ``docs/operators.md`` at the
  ``10.1-GA`` release branch (its header still says "TensorRT 10.0 supports operators in the
  inclusive range of opset 9 to opset 20"), plus onnx-tensorrt's ``docs/Changelog.md`` for 10.2
  and 10.3, which add no operator (10.2: error-handling macros, GRU/Squeeze importer changes;
  10.3: tensor ``axes`` for Slice, a new ScatterElements plugin). No ``operators.md`` of the
  10.2-GA or 10.3-GA branches could be reached from here, so the 10.3 table is the 10.1 file
  plus the changelog.
- **Latest TensorRT 10.x (10.15).** onnx/onnx-tensorrt ``docs/operators.md`` as of the 10.15 GA
  release ("TensorRT 10.15 supports operators in the inclusive range of opset 9 to opset 24").
  Between 10.3 and 10.15 the changelog adds BlackmanWindow/HammingWindow/HannWindow (10.4),
  real-valued STFT (10.5), dynamic Squeeze/Unsqueeze axes (10.7), Attention (10.14),
  RotaryEmbedding/RMSNormalization/TensorScatter (10.15); :data:`ADDED_IN` encodes these, so a
  table for any 10.x in between is the 10.1 file plus what the changelog added up to it.
- **TensorRT 11.x.** NVIDIA's "ONNX Opset Guide" for 11.x (ONNX 1.20, opsets 9 to 25, operator
  list = onnx-tensorrt ``operators.md``) and the 10.x -> 11.x migration guide (no ONNX operator
  removed); the NVIDIA/TensorRT release notes add Swish (11.0), DFT through a cuFFT plugin and
  5-D GridSample (11.2), ONNX opset 25 and Squeeze without an ``axes`` input (11.5). The 11.x
  table is the 10.15 file plus those. No ``operators.md`` of an 11.x branch could be reached.
- Q/DQ: the table's rows for QuantizeLinear / DequantizeLinear ("`y_zero_point` must be 0",
  "`x_zero_point` must be zero"); NVIDIA's "Working with Quantized Types" (symmetric INT8;
  activations per tensor, weights per channel along the output-channel axis).
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

from dataclasses import dataclass

Version = tuple  # (major, minor)

# --- the ONNX operator table, TensorRT 10.1 (onnx-tensorrt docs/operators.md, branch 10.1-GA) ---
# Y = parsed by TensorRT's ONNX parser; N = listed as unsupported. Ops absent from the table are
# treated as unsupported too.
_SUPPORTED_10_1 = """
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool
BatchNormalization Cast CastLike Ceil Celu Clip Concat Constant
ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace
DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor
Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool
Greater GreaterOrEqual GridSample GroupNormalization GRU
HardSigmoid HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf
IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod
Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RNN RoiAlign Round ScaledTanh Scan Scatter
ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax
Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split()

_UNSUPPORTED_10_1 = """
AffineGrid Bernoulli BitShift BitwiseAnd BitwiseNot BitwiseOr BitwiseXor BlackmanWindow Col2Im
CenterCropPad Compress ConcatFromSequence ConvInteger DFT Det DynamicQuantizeLinear
HammingWindow HannWindow
ImageDecoder MatMulInteger MaxRoiPool MaxUnpool MelWeightMatrix Multinomial
NegativeLogLikelihoodLoss Optional OptionalGetElement OptionalHasElement QLinearConv
QLinearMatMul RegexFullMatch STFT SequenceAt SequenceConstruct SequenceEmpty SequenceErase
SequenceInsert SequenceLength SequenceMap SoftmaxCrossEntropyLoss SplitToSequence
StringConcat StringNormalizer StringSplit TfIdfVectorizer Unique
""".split()

#: Operators the parser gained after 10.1, by the first TensorRT release that parses them
#: (onnx-tensorrt Changelog.md for 10.x; NVIDIA/TensorRT release notes for 11.x).
ADDED_IN: dict[Version, tuple[str, ...]] = {
    (10, 4): ("BlackmanWindow", "HammingWindow", "HannWindow"),
    (10, 5): ("STFT",),
    (10, 14): ("Attention",),
    (10, 15): ("RotaryEmbedding", "RMSNormalization", "TensorScatter"),
    (11, 0): ("Swish",),
    (11, 2): ("DFT",),
}

#: Documented opset range of each release whose header we could read: (version from, min, max).
#: 10.0/10.1: 9..20 (operators.md header; the ONNX submodule was not updated until 10.6, so 10.2-10.14 are
#: taken as documented for <= 20 too: a newer opset there is a warning, not an error); 10.15: 9..24;
#: 11.0-11.4: 9..24; 11.5: 9..25 ("Added support for ONNX opset 25", 11.5 release notes; the 11.x ONNX
#: Opset Guide says 25).
_OPSET_DOCUMENTED: tuple[tuple[Version, int, int], ...] = (
    ((10, 0), 9, 20), ((10, 15), 9, 24), ((11, 0), 9, 24), ((11, 5), 9, 25))
#: The newest opset any release of a major parses: above it the file is refused outright.
OPSET_HARD_MAX = {10: 24, 11: 25}

#: Version-dependent restrictions (first release without the restriction).
SQUEEZE_DYNAMIC_AXES_FROM: Version = (10, 7)      # Changelog 10.7: dynamic axes for Squeeze and Unsqueeze
SQUEEZE_WITHOUT_AXES_FROM: Version = (11, 5)      # 11.5 release notes: Squeeze when the axes input is omitted
GRIDSAMPLE_5D_FROM: Version = (11, 2)             # 11.2 release notes: 5-D GridSample

#: Named check targets -> the TensorRT release whose table they use.
TARGET_VERSIONS: dict[str, Version] = {
    "trt10": (10, 3),       # the oldest TensorRT 10 this project deploys to: JetPack 6. Passes here = runs on any 10.x
    "trt10.3": (10, 3),
    "trt10.15": (10, 15),   # the latest 10.x whose operators.md we read
    "trt11": (11, 5),       # the latest 11.x the release notes describe (11.x ONNX Opset Guide: opsets 9..25)
    "dla": (10, 3),         # DLA builds run on Jetson: JetPack 6's TensorRT 10.3
}
TARGETS = tuple(TARGET_VERSIONS)


@dataclass(frozen=True)
class OperatorTable:
    """What one TensorRT release's ONNX parser accepts."""

    version: Version
    supported: frozenset
    unsupported: frozenset
    opset_min: int
    opset_documented: int
    opset_hard: int
    source: str

    @property
    def label(self) -> str:
        return f"TensorRT {self.version[0]}.{self.version[1]}"

    def support(self, op_type: str) -> str:
        """'Y', 'N' or '?' (not in the table) for an ONNX operator of the default domain."""
        if op_type in self.supported:
            return "Y"
        if op_type in self.unsupported:
            return "N"
        return "?"

    def at_least(self, version: Version) -> bool:
        return tuple(self.version) >= tuple(version)


def _version_of(version) -> Version:
    if isinstance(version, str):
        from .trt.versions import parse_version  # pure Python

        version = parse_version(version)
    v = tuple(int(x) for x in version)
    return (v + (0, 0))[:2]


def operator_table(version) -> OperatorTable:
    """The table for a TensorRT release: ``(10, 3)``, ``"10.7.0.23"`` or a target name (``trt10``, ``trt11``...)."""
    if isinstance(version, str) and version in TARGET_VERSIONS:
        version = TARGET_VERSIONS[version]
    v = _version_of(version)
    if v < (10, 0):
        raise ValueError(f"TensorRT {v[0]}.{v[1]}: this project's tables start at TensorRT 10")
    supported, unsupported = set(_SUPPORTED_10_1), set(_UNSUPPORTED_10_1)
    added = []
    for since, ops in sorted(ADDED_IN.items()):
        if v >= since:
            supported.update(ops)
            unsupported.difference_update(ops)
            added.append(f"{since[0]}.{since[1]}: {', '.join(ops)}")
    lo, documented = 9, 20
    for since, a, b in _OPSET_DOCUMENTED:
        if v >= since:
            lo, documented = a, b
    hard = OPSET_HARD_MAX.get(v[0], max(OPSET_HARD_MAX.values()))
    source = ("onnx-tensorrt docs/operators.md (branch 10.1-GA)"
              + (f" + additions per onnx-tensorrt Changelog / TensorRT release notes ({'; '.join(added)})"
                 if added else ""))
    return OperatorTable(v, frozenset(supported), frozenset(unsupported), lo, documented, hard, source)


# Restrictions from the operators.md rows, quoted in messages; check.py has one rule per entry
# (tests/test_check.py asserts that no entry goes unchecked).
RESTRICTIONS = {
    "AveragePool": "2D or 3D pooling only; dilations must be empty or all ones",
    "MaxPool": "2D or 3D pooling only; Indices output unsupported; dilations must be empty or all ones",
    "LpPool": "dilations must be empty or all ones",
    "Resize": "modes nearest/linear; transforms half_pixel, pytorch_half_pixel, tf_half_pixel_for_nn, "
              "asymmetric, align_corners; aspect ratio policy stretch; when scales is a tensor input, axes "
              "must be an iota vector of length rank(input); no antialias",
    "QuantizeLinear": "y_zero_point must be 0",
    "DequantizeLinear": "x_zero_point must be zero",
    "TopK": "sorted must be 1; K input must be less than 3840",
    "ScatterND": "reduction other than none is not supported",
    "Dropout": "is_training must be an initializer and evaluate to False",
    "CumSum": "axis must be a build-time constant",
    "OneHot": "depth must be a build-time constant",
    "LayerNormalization": "only the first output Y is supported",
    "ReduceL1": "axes must be an initializer",
    "ReduceL2": "axes must be an initializer",
    "ReduceLogSum": "axes must be an initializer",
    "ReduceLogSumExp": "axes must be an initializer",
    "ReduceMax": "axes must be an initializer",
    "ReduceMean": "axes must be an initializer",
    "ReduceMin": "axes must be an initializer",
    "ReduceProd": "axes must be an initializer",
    "ReduceSum": "axes must be an initializer",
    "ReduceSumSquare": "axes must be an initializer",
    "Squeeze": "axes must be an initializer (10.x before 10.7) / resolvable to a constant; an omitted axes "
               "input needs 11.5+",
    "Unsqueeze": "axes must be a constant tensor (before 10.7) / resolvable to a constant",
    "Constant": "sparse_value, value_string and value_strings attributes are unsupported",
    "LSTM": "input_forget attribute must be 0; layout attribute must be 0",
    "GridSample": "input must be 4D (5D from TensorRT 11.2)",
    "Hardmax": "axis dimension of input must be a build-time constant",
    "EyeLike": "input must have static dimensions",
    "STFT": "frame_step and window must be initializers; input must be real-valued",
}

REDUCE_OPS = frozenset(op for op in RESTRICTIONS if op.startswith("Reduce"))
RESIZE_MODES = frozenset({"nearest", "linear"})
RESIZE_TRANSFORMS = frozenset({"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                               "align_corners"})
RESIZE_ASPECT_POLICIES = frozenset({"stretch"})
TOPK_MAX_K = 3840

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

# Backwards-compatible names: the latest 10.x table.
_LATEST_10 = operator_table((10, 15))
SUPPORTED_OPS = _LATEST_10.supported
UNSUPPORTED_OPS = _LATEST_10.unsupported


def parser_support(op_type: str, version="trt10.15") -> str:
    """'Y', 'N' or '?' for an operator in one release's table (default: the latest 10.x)."""
    return operator_table(version).support(op_type)
