"""cpnet: Context Prior Network (Yu et al., CVPR 2020) for semantic segmentation, from training to the edge."""

__version__ = "0.1.0"


def build_model(config):
    """Build a CPNet from a named config, a YAML path, a dict or a config object (see cpnet.models)."""
    from .models import build_model as _build

    return _build(config)


__all__ = ["build_model", "__version__"]
