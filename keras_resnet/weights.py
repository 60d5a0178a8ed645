"""Weight sources for the builders. Pretrained weights arrive with the weights issue."""

from __future__ import annotations


def check_request(weights, spec, residual, shortcut, stride_in, include_top, classes):
    """Refuse, before any layer is built, weights this version cannot provide."""
    raise NotImplementedError(
        f"weights={weights!r}: only weights=None is available in this version; "
        "pretrained and file weights come with the weights module"
    )


def load(model, weights, spec, residual):
    """Load `weights` into `model` (not reached while check_request refuses everything)."""
    raise NotImplementedError(f"weights={weights!r} cannot be loaded yet")
