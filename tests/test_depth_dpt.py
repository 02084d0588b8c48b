"""``depth/dpt``: the DPT head's stages and shapes on ViT-Tiny tokens of four layers, its
readouts, its options validated before compute, the task through the CLI and the Table 6 note.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from protocol_helpers import memory_store

from eqbench.backbones.pixels import PixelEncoder
from eqbench.checkpoints import LoadedModel
from eqbench.cli import main
from eqbench.data.base import DatasetSpec
from eqbench.errors import ConfigError
from eqbench.models import load_model
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.depth import DepthDPTConfig, token_maps
from eqbench.protocols.depth.dpt import DPTDepthHead
from eqbench.protocols.depth.head import DepthTraining, train_depth_head
from eqbench.tables.papers import mapping_lines, table_spec


@pytest.fixture(scope="module")
def vit_tiny_maps() -> torch.Tensor:
    """Token maps of four blocks of a random ViT-Ti/16 for two 64x96 images: (2, 4·2·192, 4, 6)."""
    model = load_model("baseline:random:vit_tiny_patch16_224", img_size=224)
    torch.manual_seed(0)
    return token_maps(
        memory_store(model.encoder, "d" * 64), torch.rand(2, 3, 64, 96), 4, True
    ).clone()


def test_shapes_through_the_head_for_vit_tiny_with_four_layers(
    vit_tiny_maps: torch.Tensor,
) -> None:
    assert vit_tiny_maps.shape == (2, 4 * 2 * 192, 4, 6)
    torch.manual_seed(0)
    head = DPTDepthHead(192, 1e-3, 10.0, channels=32)
    scales = head.reassemble(vit_tiny_maps)
    # D/8, D/4, D/2, D channels at x4, x2, x1, x1/2 of the 4x6 token grid (depthers.py l. 172)
    assert [tuple(s.shape) for s in scales] == [
        (2, 24, 16, 24), (2, 48, 8, 12), (2, 96, 4, 6), (2, 192, 2, 3),
    ]  # fmt: skip
    depth = head(vit_tiny_maps)
    assert depth.shape == (2, 64, 96) == (2, *head.output_size((4, 6)))  # the input's size
    assert bool((depth >= 1e-3).all())
    # an odd grid: the x1/2 scale rounds up, the output is 32 x ceil(grid / 2)
    odd = torch.randn(1, 4 * 2 * 192, 5, 7)
    assert head(odd).shape == (1, *head.output_size((5, 7))) == (1, 96, 128)


@pytest.mark.parametrize("readout", ["ignore", "add", "project"])
def test_readouts_read_the_cls_token_or_not(readout: str, vit_tiny_maps: torch.Tensor) -> None:
    torch.manual_seed(0)
    head = DPTDepthHead(192, 1e-3, 10.0, channels=16, readout=readout, scale_up=True)
    layers = vit_tiny_maps.chunk(4, dim=1)
    if readout == "ignore":
        x = torch.cat([layer[:, :192] for layer in layers], dim=1)
        assert head.in_channels == 4 * 192
    else:
        x = vit_tiny_maps
        assert head.in_channels == 4 * 2 * 192
    out = head(x)
    assert out.shape == (2, 64, 96) and bool(((out > 0) & (out < 10.0)).all())
    changed = torch.cat([torch.cat([p[:, :192], p[:, 192:] + 1.0], 1) for p in layers], 1)
    if readout == "ignore":
        with pytest.raises(ValueError, match=f"expects {4 * 192} input channels"):
            head(changed)
    else:  # a different CLS token changes the prediction
        assert not torch.allclose(head(changed), out)


def test_add_readout_adds_the_cls_token_to_every_patch_token() -> None:
    torch.manual_seed(0)
    head = DPTDepthHead(16, 1e-3, 10.0, channels=8, readout="add")
    patch, cls = torch.randn(1, 16, 2, 2), torch.randn(1, 16, 1, 1).expand(-1, -1, 2, 2)
    layer = torch.cat([patch, cls], dim=1)
    ignore = DPTDepthHead(16, 1e-3, 10.0, channels=8, readout="ignore")
    ignore.load_state_dict(head.state_dict())
    for a, b in zip(head.reassemble(layer.repeat(1, 4, 1, 1)),
                    ignore.reassemble((patch + cls).repeat(1, 4, 1, 1)), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b)


def test_bins_give_the_expected_depth_and_the_head_learns_a_constant() -> None:
    """Classification over bins stays inside [min, max]; a few steps on a constant 3 m scene
    bring the regression (scale_up) head's prediction towards 3 m."""
    torch.manual_seed(0)
    binned = DPTDepthHead(16, 1e-3, 10.0, channels=8, classify=True, n_bins=16)
    out = binned(torch.randn(2, 4 * 32, 2, 2))
    assert out.shape == (2, 32, 32) and bool(((out > 1e-3) & (out < 10.0)).all())
    torch.manual_seed(0)
    head = DPTDepthHead(16, 1e-3, 10.0, channels=8, scale_up=True)
    feats = torch.randn(4, 4 * 32, 2, 2)
    depth = torch.full((4, 32, 32), 3.0)
    with torch.no_grad():
        before = float((head(feats) - 3.0).abs().mean())
    train_depth_head(head, feats, depth, depth > 0, DepthTraining(iterations=60, batch_size=4,
                     lr=1e-2, warmup_fraction=0.1), seed=0, device=torch.device("cpu"))  # fmt: skip
    with torch.no_grad():
        after = float((head(feats) - 3.0).abs().mean())
    assert after < 0.5 * before, (before, after)


def test_config_is_validated_before_compute() -> None:
    with pytest.raises(ValueError, match="readout must be one of"):
        DepthDPTConfig(readout="concat")
    with pytest.raises(ValueError, match="channels must be at least 2"):
        DepthDPTConfig(channels=1)
    with pytest.raises(ValueError, match="reads 4 layers"):
        DPTDepthHead(192, 1e-3, 10.0, layers=1)
    assert DepthDPTConfig().layers == 4 and DepthDPTConfig(readout="ignore").use_cls is False


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_cli_eval_writes_a_result(tmp_path: Path) -> None:
    out_dir = tmp_path / "results"
    code, out = run_cli(
        "eval", "--task", "depth/dpt", "--checkpoint", "baseline:random:vit_tiny_patch16_224",
        "--set", "n_train=8", "--set", "n_test=4", "--set", "iterations=3",
        "--set", "image_size=32", "--set", "channels=8", "--set", "batch_size=4",
        "--results-dir", str(out_dir), "--quiet",
    )  # fmt: skip
    assert code == 0, out
    files = list(out_dir.rglob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["task"] == "depth/dpt" and record["primary_metric"] == "rmse"
    assert record["dataset"] == "depth_scenes"
    assert 0.0 < record["metrics"]["rmse"]["mean"] < 10.0
    assert set(record["metrics"]) == set(PROTOCOLS.get("depth_linear").metrics)


def test_unknown_option_and_layers_are_refused(tmp_path: Path) -> None:
    for option, message in (("layers=1", "layers"), ("readout=cls", "readout must be one of")):
        code, out = run_cli(
            "eval", "--task", "depth/dpt", "--checkpoint", "baseline:pixels",
            "--set", option, "--results-dir", str(tmp_path / "r"), "--quiet",
        )  # fmt: skip
        assert code != 0 and message in out and "Traceback" not in out, out
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*"))


@pytest.mark.parametrize("spec", ["pixels", "micro_vit"])
def test_a_backbone_without_four_blocks_is_refused_with_the_remedy(spec: str) -> None:
    if spec == "pixels":
        encoder: torch.nn.Module = PixelEncoder(img_size=32, grid=4)
        model = LoadedModel(model_id=spec, sha256="p" * 64, encoder=encoder, spec="x", info={})
    else:  # two blocks
        model = load_model("baseline:random:micro_vit", img_size=32)
        encoder = model.encoder
    ctx = EvalContext(
        model, memory_store(encoder, "d" * 64), DatasetSpec.parse("depth_scenes"), seed=0
    )
    cfg = DepthDPTConfig(image_size=32, n_train=4, n_test=2, iterations=1)
    with pytest.raises(ConfigError, match=r"reads four blocks.*Use depth/linear"):
        PROTOCOLS.get("depth_dpt")().run(cfg, ctx)


def test_table6_depth_columns_note_the_dpt_variant() -> None:
    lines = {line.split(":")[0]: line for line in mapping_lines(table_spec("wang2026", "6"))}
    assert lines["nyu_rmse"].startswith("nyu_rmse: depth/linear on nyu")
    assert "depth/dpt" in lines["nyu_rmse"] and "depth/dpt" in lines["kitti_absrel"]
