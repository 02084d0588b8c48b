"""What every pretraining method is: a module with an ``encoder`` and a ``training_step``.

A *method* (``simclr``, ``vicreg``, ``tir+vicreg``, ...) owns the backbone :class:`Encoder`, its
heads, its augmentations and its loss. The engine (:mod:`eqbench.train.engine`) hands it a
:class:`TrainBatch` per step and back-propagates the ``"loss"`` entry of the dict it returns; the
other entries are logged. Methods register themselves in :data:`METHODS` where they are defined,
with :func:`register_method`, which also records their paper, a description and the small
``test_options`` with which the registry-parametrised tests train them.

A base joint-embedding method is split in two so that wrappers such as TIR can reuse it: the
:class:`Objective` (projector/expander + loss on two global features, registered in
:data:`OBJECTIVES`) and the generic two-view pipeline around it
(:class:`~eqbench.methods.joint.JointEmbedding`); one decorator on the objective,
:func:`~eqbench.methods.joint.register_objective`, registers both.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from eqbench.backbones import Encoder
from eqbench.dataclass_dicts import from_dict
from eqbench.errors import ConfigError
from eqbench.methods.augment import source_aspect
from eqbench.registry import Registry, did_you_mean, first_paragraph

#: Where the error for an unknown method points the user.
LIST_METHODS = "eqbench pretrain --help"


@dataclass
class TrainBatch:
    """One step's input.

    Attributes:
        images: ``(B, 3, S, S)`` uint8 images on the training device.
        generator: CPU generator every random augmentation parameter is drawn from; the engine
            seeds it from ``(seed, step, rank)``, so a step's views never depend on the past.
        step: 0-based optimisation step, for methods with their own schedules (DINO's teacher
            temperature warm-up).
        diagnostics: ``True`` at the engine's log steps: a method may then add costlier
            diagnostics to its output (TIR's ``recon_grad_share``); they never change the loss.
        aspect: ``(B,)`` width / height of the source images when ``images`` are whole images
            resized to squares (``full_image``); ``None`` when they are the squares to crop from.
    """

    images: Tensor
    generator: torch.Generator
    step: int = 0
    diagnostics: bool = False
    aspect: Tensor | None = None


class Objective(nn.Module, ABC):
    """Head + loss of a joint-embedding method on two global features.

    Subclasses register in :data:`OBJECTIVES` and are built as ``cls(in_dim, options)`` with
    ``options`` an instance of their :attr:`options_class` dataclass.

    Attributes:
        options_class: the dataclass of the objective's options (``expander_dims``, ...).
        in_dim: width of the features it takes.
    """

    options_class: ClassVar[type]
    #: Overrides of :class:`~eqbench.methods.augment.AugmentConfig` for the views of every
    #: method built on this objective (``None``: VICReg's augmentations).
    augment_defaults: ClassVar[dict[str, Any] | None] = None
    in_dim: int

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim

    @abstractmethod
    def forward(self, f1: Tensor, f2: Tensor) -> dict[str, Tensor]:
        """Losses for features ``f1``, ``f2`` ``(B, in_dim)`` of two views of the same images.

        Returns:
            Scalars; ``"loss"`` is the one to minimise, the others are its parts, for logging.
        """


class Method(nn.Module, ABC):
    """Base class of pretraining methods.

    Attributes:
        name: registry name (``"tir+vicreg"``).
        encoder: the backbone; it alone is saved as the checkpoint's ``backbone``.
        options: resolved options (JSON-able), for logs and provenance.
        has_unused_parameters: ``True`` when some parameters get no gradient (DDP must then
            search for them).
        has_teacher: ``True`` when the method owns an EMA teacher that the engine updates with
            :meth:`update_teacher` after every optimiser step.
    """

    name: str
    encoder: Encoder
    options: dict[str, Any]
    has_unused_parameters: bool = False
    has_teacher: bool = False

    @property
    def trained_feature(self) -> str | None:
        """The backbone global feature its losses train (``cls`` or ``avgpool``); ``None`` when
        no image-level feature is trained (``feature: auto`` then reads the CLS token)."""
        return None

    @abstractmethod
    def training_step(self, batch: TrainBatch) -> dict[str, Tensor]:
        """Losses of one step; ``"loss"`` is the total to back-propagate."""

    def update_teacher(self, momentum: float) -> None:
        """Move the teacher towards the student, ``θ_t ← m·θ_t + (1 − m)·θ_s`` (no-op here).

        The engine calls it after every ``optimizer.step()`` with the scheduled momentum
        (:func:`eqbench.train.schedule.teacher_momentum`), on the unwrapped method under DDP.
        """

    def forward(self, batch: TrainBatch) -> dict[str, Tensor]:
        """:meth:`training_step` (so DistributedDataParallel can wrap the method), with the
        batch's source aspect ratios set for the random resized crops of its views
        (:func:`~eqbench.methods.augment.source_aspect`)."""
        with source_aspect(batch.aspect):
            return self.training_step(batch)


#: ``factory(encoder, img_size, options) -> Method``.
MethodFactory = Callable[[Encoder, int, dict[str, Any]], Method]


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: how to build it and what is known about it.

    Attributes:
        build: the factory, ``build(encoder, img_size, options) -> Method``.
        paper: the paper it implements (authors, venue, arXiv id), for ``eqbench ls methods``.
        description: one line on what it trains.
        test_options: options that make it small enough to train in well under a second on
            ``micro_vit`` at 32 px; every registry-parametrised test builds it with them.
    """

    build: MethodFactory
    paper: str
    description: str
    test_options: dict[str, Any] = field(default_factory=dict)


#: ``name -> MethodEntry``; ``tir+<objective>`` members are resolved on lookup
#: (:mod:`eqbench.methods.tir`).
METHODS: Registry[MethodEntry] = Registry("method", LIST_METHODS)

#: ``name -> Objective subclass``; ``tir+<name>`` exists for every one of them.
OBJECTIVES: Registry[type[Objective]] = Registry("objective", LIST_METHODS)

F = TypeVar("F", bound=Callable[..., Method])


def register_method(
    name: str,
    *,
    paper: str,
    description: str | None = None,
    test_options: dict[str, Any] | None = None,
) -> Callable[[F], F]:
    """Decorator registering a method factory in :data:`METHODS` with its metadata.

    Example::

        @register_method("mymethod", paper="Doe et al., ICLR 2030, arXiv 3001.00001",
                         test_options={"projector_dims": [32, 16]})
        def mymethod(encoder: Encoder, img_size: int, options: dict[str, Any]) -> Method:
            \"\"\"One line on what it trains.\"\"\"
            return MyMethod(encoder, img_size, options)

    Args:
        name: the method's name (``snake_case``; ``tir+`` is reserved for TIR's variants).
        paper: authors, venue and arXiv id of the paper it implements.
        description: one line (default: the first paragraph of the factory's docstring).
        test_options: small options for the tests (:attr:`MethodEntry.test_options`).
    """

    def deco(factory: F) -> F:
        text = description or first_paragraph(factory)
        METHODS.add(
            name, MethodEntry(factory, paper, text, dict(test_options or {})), description=text
        )
        return factory

    return deco


def build_method(
    name: str, encoder: Encoder, img_size: int, options: dict[str, Any] | None = None
) -> Method:
    """Build a registered method around ``encoder``.

    Args:
        name: a name in :data:`METHODS` (did-you-mean on a typo).
        encoder: the backbone to train.
        img_size: side of the training views in pixels.
        options: method options (the config's ``method_options``); unknown keys are errors.
    """
    return METHODS.get(name).build(encoder, img_size, dict(options or {}))


def split_options(
    options: dict[str, Any], schemas: Sequence[type], where: str
) -> list[dict[str, Any]]:
    """Route each key of ``options`` to the dataclass (of ``schemas``) that has that field.

    Raises:
        ConfigError: a key no schema knows (did-you-mean over all of them).
    """
    fields = [{f.name for f in dataclasses.fields(s)} for s in schemas]
    known = sorted(set().union(*fields))
    parts: list[dict[str, Any]] = [{} for _ in schemas]
    for key, value in options.items():
        owner = next((i for i, names in enumerate(fields) if key in names), None)
        if owner is None:
            hint = did_you_mean(key, known)
            raise ConfigError(
                f"{where}: unknown option '{key}'.{hint} Valid options: {', '.join(known)}."
            )
        parts[owner][key] = value
    return parts


def build_objective(name: str, in_dim: int, options: dict[str, Any], where: str) -> Objective:
    """Build the registered objective ``name`` for ``in_dim``-wide features."""
    cls = OBJECTIVES.get(name)
    return cls(in_dim, from_dict(cls.options_class, options, where))  # type: ignore[call-arg]


def projection_mlp(in_dim: int, dims: Sequence[int], *, last_bias: bool = True) -> nn.Sequential:
    """``Linear → BatchNorm1d → ReLU`` for every hidden width, then a final ``Linear``.

    The projector of SimCLR (arXiv 2002.05709) and the expander of VICReg (arXiv 2105.04906,
    whose last layer has no bias).

    Args:
        in_dim: input width.
        dims: hidden widths followed by the output width (at least one entry).
        last_bias: whether the final ``Linear`` has a bias.
    """
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"Projector widths must be a non-empty list of positive ints: {dims}.")
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in dims[:-1]:
        layers += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        width = hidden
    layers.append(nn.Linear(width, dims[-1], bias=last_bias))
    return nn.Sequential(*layers)
