"""OpenMMLab engines for dense tasks: mmsegmentation (UPerNet, Semantic FPN) and mmdetection
(Mask R-CNN), with any eqbench backbone registered as their backbone.

OpenMMLab is optional: ``scripts/build_mmcv.sh`` installs it (mmcv 2.1.0 has no wheel for this
torch, so the script builds one once and caches it). :func:`require_openmmlab` names that
remedy when it is missing; import the submodules only after it returns.
"""

from __future__ import annotations

import importlib.util

from eqbench.errors import MissingDependencyError

#: The import names the engines need (``mmcv`` with its compiled ops, not mmcv-lite).
REQUIRED_MODULES = ("mmcv", "mmengine", "mmseg", "mmdet")
REMEDY = (
    "Run `scripts/build_mmcv.sh` (it builds mmcv 2.1.0 with CPU ops once, about 20 minutes, "
    "caches the wheel and installs mmengine 0.10.7, mmsegmentation 1.2.2 and mmdet 3.3.0)."
)


def missing_openmmlab() -> str | None:
    """Why the OpenMMLab engines cannot run here, or ``None`` when they can."""
    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        return f"OpenMMLab is not installed (missing: {', '.join(missing)}). {REMEDY}"
    if importlib.util.find_spec("mmcv._ext") is None:
        return f"mmcv is installed without its compiled ops (mmcv-lite?). {REMEDY}"
    return None


def require_openmmlab() -> None:
    """Raise :class:`~eqbench.errors.MissingDependencyError` naming the remedy when OpenMMLab
    is missing."""
    reason = missing_openmmlab()
    if reason is not None:
        raise MissingDependencyError(reason)
