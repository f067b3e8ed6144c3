"""Shared fixtures: a tiny synthetic dataset and tiny checkpoints that need no training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cpnet.runtime.options import RuntimeOptions

# A ResNet-18 at base width 16 with a 16-channel head on a 4x4 prior grid: 32x32 inputs, fast on a 2-core CPU.
TINY_OVERRIDES = ["model.prior_size=4", "model.base_width=16", "model.head_channels=16",
                  "model.aux_channels=8", "model.agg_kernel=3"]


def randomize_bn(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every BN non-trivial running statistics and affine parameters, so BN folding is really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.3)


def build_tiny_model(head: str = "cpnet", seed: int = 0, overrides=()):
    """(eval-mode CPNet with random weights and BN stats, its Config)."""
    from cpnet.config import load_config
    from cpnet.models.cpnet import CPNet

    cfg = load_config("quickstart", [*TINY_OVERRIDES, f"model.head={head}", *overrides])
    torch.manual_seed(seed)
    model = CPNet(cfg.model)
    randomize_bn(model, seed + 1)
    with torch.no_grad():  # a classifier with some spread, so argmax is not decided by rounding noise
        for m in model.modules():
            if hasattr(m, "classifier"):
                m.classifier.weight.normal_(0, 0.3)
    return model.eval(), cfg


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A synthetic dataset (6 train + 4 val images of 48x48) in the folder format."""
    from cpnet.data.synthetic import generate

    return generate(tmp_path_factory.mktemp("synthetic"), n_train=6, n_val=4, size=48, seed=0)


@pytest.fixture(scope="session")
def make_tiny_checkpoint(tiny_data):
    """Factory: ``make_tiny_checkpoint(run_dir, head="cpnet", seed=0)`` writes run_dir/best.pt (+ manifest)."""
    from cpnet.checkpoint import save_checkpoint
    from cpnet.data.synthetic import SYNTHETIC_NAMES, SYNTHETIC_PALETTE

    def make(run_dir: "str | Path", head: str = "cpnet", seed: int = 0, overrides=()) -> Path:
        model, cfg = build_tiny_model(head, seed, [f"data.root={tiny_data}", *overrides])
        path = Path(run_dir) / "best.pt"
        classes, palette = list(SYNTHETIC_NAMES), [list(c) for c in SYNTHETIC_PALETTE]
        state = {"model": model.state_dict(), "config": cfg.to_dict(), "iter": 0, "classes": classes, "palette": palette}
        save_checkpoint(path, state, cfg, classes, palette)
        return path

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, make_tiny_checkpoint) -> Path:
    """A cpnet-head checkpoint (run_dir/best.pt) whose config points at ``tiny_data``."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    """``tiny_checkpoint`` exported to ONNX (FP32, with manifest), parity-checked on ``tiny_data``'s val split."""
    from cpnet.export import export_checkpoint

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_onnx") / "model.onnx"
    path, _ = export_checkpoint(tiny_checkpoint, out, runtime=RuntimeOptions(threads=1))
    return path


def error_line(stderr: str) -> str:
    """The one error line a failed command writes to stderr (its log lines may precede it), no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith(("error:", "cpnet", "python -m"))
              and "error" in line]
    assert len(errors) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return errors[0]


@pytest.fixture(scope="session")
def tiny_prior_onnx(tmp_path_factory, tiny_checkpoint) -> Path:
    """``tiny_checkpoint`` exported with ``--with-prior``: outputs ``logits`` and ``prior`` (1, 16, 16)."""
    from cpnet.export import ExportOptions, export_checkpoint

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_prior_onnx") / "model.prior.onnx"
    path, _ = export_checkpoint(tiny_checkpoint, out, ExportOptions(with_prior=True), RuntimeOptions(threads=1))
    return path


@pytest.fixture
def fake_trt(monkeypatch):
    """``fake_trt(version="10.3.0", **knobs)``: ``import tensorrt`` / ``pycuda`` / ``cuda.bindings`` become the
    fake of that version (tests/fake_tensorrt); returns its :class:`fake_tensorrt.World`. Removed afterwards."""
    import fake_tensorrt
    from engines.trt import hardware

    def install(version: str = "10.3.0", **knobs):
        world = fake_tensorrt.install(version, **knobs)
        monkeypatch.setattr(hardware, "is_jetson", lambda: world.jetson)  # every caller asks it through the module
        return world

    yield install
    fake_tensorrt.uninstall()
