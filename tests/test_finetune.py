"""classification/finetune: the MAE / BEiT finetuning recipe, inat2019 through it, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from timm.data import auto_augment
from timm.layers import DropPath
from timm.optim import param_groups_layer_decay
from torch import Tensor, nn
from transfer_fixtures import make_inat

from eqbench.backbones.timm_encoder import create_encoder
from eqbench.checkpoints import LoadedModel
from eqbench.cli import main
from eqbench.data.base import DatasetSpec, ImageDataset
from eqbench.dataclass_dicts import from_dict
from eqbench.features.store import FeatureStore
from eqbench.protocols import PROTOCOLS, EvalContext
from eqbench.protocols.classification import finetune as ft
from eqbench.protocols.classification import majority_top1
from eqbench.tasks import all_tasks

# --- layer-wise lr decay against MAE -----------------------------------------------------------


def mae_param_groups_lrd(
    named_parameters: list[tuple[str, nn.Parameter]],
    num_blocks: int,
    weight_decay: float = 0.05,
    no_weight_decay_list: Any = (),
    layer_decay: float = 0.75,
) -> dict[str, tuple[float, float]]:
    """MAE's ``param_groups_lrd`` and ``get_layer_id_for_vit`` (facebookresearch/mae
    ``util/lr_decay.py`` lines 15-76, after BEiT's ``optim_factory.py``), copied line for line;
    only the input (``model.named_parameters()``, ``len(model.blocks)``) and the output (each
    parameter's ``(lr_scale, weight_decay)`` instead of the grouped lists) are reshaped."""

    def get_layer_id_for_vit(name: str, num_layers: int) -> int:
        if name in ["cls_token", "pos_embed"]:  # noqa: SIM114 (kept as MAE wrote it)
            return 0
        elif name.startswith("patch_embed"):
            return 0
        elif name.startswith("blocks"):
            return int(name.split(".")[1]) + 1
        else:
            return num_layers

    num_layers = num_blocks + 1
    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))
    out = {}
    for n, p in named_parameters:
        if not p.requires_grad:
            continue
        if p.ndim == 1 or n in no_weight_decay_list:  # noqa: SIM108
            this_decay = 0.0
        else:
            this_decay = weight_decay
        layer_id = get_layer_id_for_vit(n, num_layers)
        out[n] = (layer_scales[layer_id], this_decay)
    return out


def per_parameter(groups: list[dict[str, Any]], names: dict[int, str]) -> dict[str, tuple]:
    return {names[id(p)]: (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}


def small_vit(**kw: Any) -> Any:
    return create_encoder("vit_tiny_patch16", img_size=32, depth=4, embed_dim=48, num_heads=3, **kw)


@pytest.mark.parametrize("layer_decay", [0.65, 0.75, 1.0])
def test_timm_layer_decay_equals_mae_param_groups_lrd(layer_decay: float) -> None:
    import timm

    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, depth=4, embed_dim=48, num_heads=3,
        num_classes=7, global_pool="avg",
    )  # fmt: skip  # MAE's finetuning model: fc_norm + head on the mean patch token
    named = list(model.named_parameters())
    expected = mae_param_groups_lrd(named, 4, 0.05, model.no_weight_decay(), layer_decay)
    groups = param_groups_layer_decay(
        model, 0.05, no_weight_decay_list=model.no_weight_decay(), layer_decay=layer_decay
    )
    got = per_parameter(groups, {id(p): n for n, p in named})
    assert got.keys() == expected.keys()
    for name, (scale, decay) in expected.items():
        assert got[name][0] == pytest.approx(scale, rel=1e-12), name
        assert got[name][1] == decay, name
    assert expected["blocks.3.attn.qkv.weight"] == (layer_decay, 0.05)  # one below the top
    assert expected["pos_embed"] == (pytest.approx(layer_decay**5), 0.0)


def test_timm_alone_files_the_final_norm_with_the_last_block_where_mae_puts_it_on_top() -> None:
    import timm

    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, depth=4, embed_dim=48, num_heads=3, num_classes=0
    )  # the backbone as eqbench loads it: CLS pooling, final norm, no head
    named = list(model.named_parameters())
    mae = mae_param_groups_lrd(named, 4, 0.05, model.no_weight_decay(), 0.65)
    groups = param_groups_layer_decay(model, 0.05, model.no_weight_decay(), layer_decay=0.65)
    timm_alone = per_parameter(groups, {id(p): n for n, p in named})
    assert mae["norm.weight"][0] == 1.0 and timm_alone["norm.weight"][0] == 1.0
    assert mae["blocks.3.mlp.fc1.weight"][0] == 0.65  # MAE: one below the top
    assert timm_alone["blocks.3.mlp.fc1.weight"][0] == 1.0  # timm: the last block is the top


@pytest.mark.parametrize("feature", ["cls", "avgpool"])
@pytest.mark.parametrize("layer_decay", [0.65, 1.0])
def test_finetune_groups_equal_mae_with_the_new_head_on_top(
    feature: str, layer_decay: float
) -> None:
    model = ft.FinetuneClassifier(small_vit(), feature, 5, 32)
    groups = ft.param_groups(model, 0.05, layer_decay)
    names = {id(p): n for n, p in model.named_parameters()}
    got = per_parameter(groups, names)
    assert len(got) == len(list(model.parameters()))  # every parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(got)
    # MAE's model has the backbone's names and its own fc_norm / head
    mae_named = [(n.removeprefix("encoder.model."), p) for n, p in model.named_parameters()]
    expected = mae_param_groups_lrd(
        mae_named, 4, 0.05, model.encoder.model.no_weight_decay(), layer_decay
    )
    for name, value in got.items():
        mae = expected[name.removeprefix("encoder.model.")]
        assert value[0] == pytest.approx(mae[0], rel=1e-12) and value[1] == mae[1], name
    assert got["head.weight"] == (1.0, 0.05) and got["fc_norm.bias"] == (1.0, 0.0)
    assert got["encoder.model.norm.weight"] == (1.0, 0.0)
    assert got["encoder.model.cls_token"] == (pytest.approx(layer_decay**5), 0.0)


def test_head_is_initialised_as_mae() -> None:
    torch.manual_seed(0)
    model = ft.FinetuneClassifier(small_vit(), "cls", 100, 32)
    w = model.head.weight.detach()
    assert w.shape == (100, 48) and torch.all(model.head.bias == 0)
    # timm's trunc_normal_ cuts at ±2 in absolute units, so at std 2e-5 it is a plain normal
    assert float(w.std()) == pytest.approx(ft.HEAD_INIT_STD, rel=0.05)
    assert float(w.abs().max()) < 10 * ft.HEAD_INIT_STD


# --- schedule, drop path, augmentation ----------------------------------------------------------


def test_learning_rate_is_mae_warmup_then_half_cosine() -> None:
    cfg = ft.FinetuneConfig(epochs=10, warmup_epochs=2, batch_size=512, blr=1e-3, min_lr=1e-6)
    assert cfg.peak_lr == pytest.approx(2e-3)  # blr x 512 / 256
    assert ft.learning_rate(0, cfg) == 0
    assert ft.learning_rate(1, cfg) == pytest.approx(1e-3)
    assert ft.learning_rate(2, cfg) == pytest.approx(2e-3)
    assert ft.learning_rate(6, cfg) == pytest.approx(1e-6 + (2e-3 - 1e-6) * 0.5)
    assert ft.learning_rate(10, cfg) == pytest.approx(1e-6)
    explicit = ft.FinetuneConfig(lr=3e-4, warmup_epochs=0)
    assert explicit.peak_lr == 3e-4 and ft.learning_rate(0, explicit) == pytest.approx(3e-4)


def test_drop_path_rises_linearly_over_the_blocks() -> None:
    encoder = small_vit()
    assert ft.set_drop_path(encoder, 0.3)
    blocks = encoder.model.blocks  # type: ignore[attr-defined]
    assert isinstance(blocks[0].drop_path1, nn.Identity)  # rate 0 in the first block
    rates = [b.drop_path2.drop_prob for b in blocks[1:]]
    assert rates == pytest.approx([0.1, 0.2, 0.3])
    assert all(isinstance(b.drop_path1, DropPath) for b in blocks[1:])


def test_posterize_to_zero_bits_is_black_as_pillow_used_to_do() -> None:
    img = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    assert np.array(ft.posterize(img, 0)).max() == 0
    assert np.array(ft.posterize(img, 1)).max() == 128
    cfg = ft.FinetuneConfig(image_size=16)
    transform = ft.train_transform(cfg, (0.5,) * 3, (0.5,) * 3)
    randaug = next(t for t in transform.transforms if hasattr(t, "ops"))
    funcs = {op.name: op.aug_fn for op in randaug.ops}
    assert funcs["PosterizeIncreasing"] is ft.posterize
    op = auto_augment.AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10)
    op.aug_fn = ft.posterize  # magnitude 10 keeps 0 bits, which Pillow now refuses
    assert np.array(op(img)).max() == 0


# --- scoring ----------------------------------------------------------------------------------


def test_top1_and_top5_on_fixed_logits_by_hand() -> None:
    logits = torch.tensor(
        [
            [0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # order 0 6 5 4 3 2 1
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],  # order 6 5 4 3 2 1 0
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # ties: order 0 1 2 3 4 5 6
            [0.0, 3.0, 1.0, 2.0, -1.0, 5.0, 4.0],  # order 5 6 1 3 2 0 4
        ]
    )
    labels = torch.tensor([0, 1, 4, 2])
    # row 0: top-1 hit; row 1: label 1 is 6th: miss both; row 2: label 4 is 5th: top-5 hit;
    # row 3: label 2 is 5th: top-5 hit
    assert ft.topk_hits(logits, labels, 1).tolist() == [True, False, False, False]
    assert ft.topk_hits(logits, labels, 5).tolist() == [True, False, True, True]
    # with fewer classes than k every class counts
    assert ft.topk_hits(logits[:, :3], torch.tensor([0, 1, 2, 2]), 5).all()


class TensorImages(ImageDataset):
    """An in-memory labelled split (images resized on load)."""

    def __init__(self, images: Tensor, labels: np.ndarray, classes: int, split: str) -> None:
        self.name, self.split = "tensors", split
        self.images, self.labels = images, labels
        self.groups = np.arange(len(labels))
        self.classes = [str(c) for c in range(classes)]

    def load(self, indices: Any, size: int) -> Tensor:
        x = self.images[list(indices)].float()
        x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return x.round().clamp(0, 255).to(torch.uint8)

    def fingerprint(self) -> dict[str, Any]:
        return {"name": self.name, "split": self.split, "n": len(self)}


def coloured_split(n: int, classes: int, seed: int, split: str) -> TensorImages:
    """Images whose class is their colour: a task any backbone can learn in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    colours = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]])[:classes]
    noise = rng.integers(-25, 26, size=(n, 16, 16, 3))
    pixels = np.clip(colours[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return TensorImages(torch.from_numpy(pixels).permute(0, 3, 1, 2), labels, classes, split)


def test_evaluate_scores_the_head_with_topk_hits() -> None:
    test = coloured_split(12, 3, 1, "test")
    model = ft.FinetuneClassifier(small_vit(), "avgpool", 3, 32)
    with torch.no_grad():  # a head that always ranks class 2, then 1, then 0
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
    cfg = ft.FinetuneConfig(image_size=32, batch_size=5, crop_pct=1.0, mixup=0.0, cutmix=0.0)
    scores = ft.evaluate(model, test, cfg, torch.device("cpu"))
    assert scores == {"top1": pytest.approx(1 / 3), "top5": 1.0}
    assert majority_top1(np.array([0, 2, 2, 1]), np.array([2, 0, 2, 1])) == 0.5


# --- learning: the backbone changes, the shared model does not --------------------------------


def _state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_finetuning_updates_the_backbone_but_never_the_shared_frozen_model() -> None:
    torch.manual_seed(0)
    encoder = small_vit()
    model = LoadedModel(model_id="m", sha256="0" * 64, encoder=encoder, spec="m", info={})
    store = FeatureStore(encoder, model.sha256, torch.device("cpu"), None, show_progress=False)
    probe = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before_feats = encoder(probe).pooled("cls")
    before = _state(encoder)
    cfg = ft.FinetuneConfig(
        image_size=32, epochs=2, warmup_epochs=0, batch_size=8, lr=1e-3, layer_decay=0.75,
        auto_augment=None, mixup=0.0, cutmix=0.0, reprob=0.0, crop_pct=1.0,
    )  # fmt: skip
    train, test = coloured_split(32, 3, 0, "train"), coloured_split(12, 3, 1, "test")

    # the library function trains the encoder it is given: every block moves, the stem too
    trained = small_vit()
    trained.load_state_dict(before)
    result = ft.finetune(trained, train, test, cfg, device=torch.device("cpu"), seed=0)
    after = trained.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "model.patch_embed.proj.weight" in changed and "model.cls_token" in changed
    assert all(any(k.startswith(f"model.blocks.{i}.") for k in changed) for i in range(4))
    assert result.losses[-1] < result.losses[0]
    assert result.top1 == 1.0  # colours are trivially separable

    # the protocol finetunes a copy: the loaded model, shared with frozen tasks and the
    # feature cache, keeps its weights and features
    ctx = EvalContext(model=model, store=store, dataset=DatasetSpec("unused"), seed=0)
    ctx.open = lambda split, n=None: train if split == "train" else test  # type: ignore[method-assign]
    values = PROTOCOLS.get("finetune")().run(cfg, ctx)
    assert values["top1"] == [1.0] and values["top1_majority"] == [pytest.approx(1 / 3)]
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    with torch.no_grad():
        assert torch.equal(encoder(probe).pooled("cls"), before_feats)
    assert not encoder.training


# --- the task, the CLI, bad options, the table --------------------------------------------------


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


TINY = [
    "--set", "image_size=16", "--set", "epochs=1", "--set", "warmup_epochs=0",
    "--set", "batch_size=64", "--set", "auto_augment=null",
]  # fmt: skip


def test_cli_eval_writes_a_result_the_leaderboard_shows(tmp_path: Path) -> None:
    out_dir = tmp_path / "results"
    code, out = run_cli(
        "eval", "--task", "classification/finetune",
        "--checkpoint", "baseline:random:vit_tiny_patch16_224", *TINY,
        "--results-dir", str(out_dir), "--quiet",
    )  # fmt: skip
    assert code == 0, out
    files = list(out_dir.rglob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["task"] == "classification/finetune" and record["dataset"] == "digits"
    assert record["primary_metric"] == "top1" and record["config"]["epochs"] == 1
    metrics = record["metrics"]
    assert 0 <= metrics["top1"]["mean"] <= metrics["top5"]["mean"] <= 1
    assert metrics["lr"]["mean"] == pytest.approx(2e-3 * 64 / 256)
    assert record["adjustments"]["lr"]["used"] == pytest.approx(5e-4)
    code, out = run_cli("leaderboard", "--results-dir", str(out_dir))
    assert code == 0 and "classification/finetune" in out, out


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("lr=0", "lr must lie in (0"),
        ("blr=-1", "blr must lie in (0"),
        ("epochs=0", "epochs must be >= 1"),
        ("mixup_prob=1.5", "mixup_prob must lie in [0, 1]"),
        ("mixup_switch_prob=-0.1", "mixup_switch_prob must lie in [0, 1]"),
        ("layer_decay=0", "layer_decay must lie in (0, 1]"),
        ("layer_decay=1.2", "layer_decay must lie in (0, 1]"),
        ("drop_path=1", "drop_path must lie in [0, 1)"),
        ("smoothing=1", "smoothing must lie in [0, 1)"),
        ("warmup_epochs=41", "warmup_epochs must lie in [0, 40]"),
        ("batch_size=63", "batch_size must be even"),
        ("auto_augment=rand-zz9", "is not a timm policy"),
        ("mixup_mode=row", "mixup_mode must be one of"),
        ("crop_pct=0", "crop_pct must lie in (0, 1]"),
        ("batch_size=2000", "fewer than one batch"),
        ("feature=pooled", "feature must be one of"),
    ],
)
def test_bad_options_fail_before_compute_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: str, message: str
) -> None:
    def never(*_: Any, **__: Any) -> Any:
        raise AssertionError("finetuning started despite a bad option")

    monkeypatch.setattr(ft, "finetune", never)
    out_dir = tmp_path / "results"
    code, out = run_cli(
        "eval", "--task", "classification/finetune",
        "--checkpoint", "baseline:random:vit_tiny_patch16_224",
        "--set", option, "--results-dir", str(out_dir), "--quiet",
    )  # fmt: skip
    assert code != 0
    assert message in out, out
    assert "Traceback" not in out and "finetuning started" not in out
    assert not out_dir.exists() or not any(out_dir.rglob("*"))


def test_shipped_inat2019_task_has_gtsa_settings() -> None:
    spec = all_tasks()["classification/finetune_inat2019"]
    cfg = from_dict(ft.FinetuneConfig, spec.config, spec.name)
    assert spec.dataset == "inat2019" and spec.protocol == "finetune"
    assert (cfg.image_size, cfg.epochs, cfg.warmup_epochs, cfg.batch_size) == (224, 100, 5, 1024)
    assert cfg.peak_lr == pytest.approx(2e-3)  # blr 5e-4 x 1024 / 256
    assert (cfg.layer_decay, cfg.weight_decay, cfg.drop_path) == (0.65, 0.05, 0.1)
    assert (cfg.mixup, cfg.cutmix, cfg.smoothing, cfg.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert cfg.auto_augment == "rand-m9-mstd0.5-inc1" and cfg.feature == "avgpool"
    assert cfg.crop_pct == 0.875 and cfg.load_size == 256


# --- inat2019 through the task -------------------------------------------------------------


def test_inat2019_runs_through_the_finetune_task(tmp_path: Path) -> None:
    root = make_inat(tmp_path / "inat", "2019").folder
    out_dir = tmp_path / "results"
    code, out = run_cli(
        "eval", "--task", "classification/finetune", "--dataset", f"inat2019:{root}",
        "--checkpoint", "baseline:random:micro_vit", "--set", "image_size=16",
        "--set", "epochs=1", "--set", "warmup_epochs=0", "--set", "batch_size=4",
        "--results-dir", str(out_dir), "--quiet",
    )  # fmt: skip
    assert code == 0, out
    record = json.loads(next(out_dir.rglob("*.json")).read_text())
    assert record["dataset"].startswith("inat2019:")
    assert record["metrics"]["top5"]["mean"] == 1.0  # 3 classes: every class is in the top 5
    assert math.isclose(record["metrics"]["top1_majority"]["mean"], 1 / 3)
