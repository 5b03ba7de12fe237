"""Typed, frozen trial configs and the trial id.

A trial is fully described by a :class:`TrialConfig`. Every field has a default and a comment
that says why. The config is unpacked once at the entry point (:func:`core.run_trial`), and every
saved result carries its full config (``config.yaml`` in the trial directory). Reading YAML,
dotted ``--set`` overrides and "did you mean" live in ``core/_overrides.py``; sizes and their
limits in ``core/_size.py``.

Numbers are numbers: a boolean where a number belongs (``--set model.width=true``) is refused
rather than read as 1. ``data`` is one type per data kind, each with only the fields it uses; a
field that the kind ignores (``data.seed`` for the circle) is accepted and dropped, so that it
never changes the trial id.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_DEPTH = 1000  # far beyond the seed's 3; depth 10^6 would hang the kernel recursion
MAX_EPOCHS = 10**9  # beyond this t = step * lr loses integer exactness in float64 bookkeeping
MAX_TRACKED = 200_000  # tracked rows per trial; more would make a trajectory of gigabytes
MAX_SEED = 2**63 - 1  # torch.Generator takes 64-bit seeds; the store's seed column is int64


def _holds_bool(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(_holds_bool(v) for v in value)
    return isinstance(value, bool)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, value: Any, info: ValidationInfo) -> Any:
        """Refuse True/False where a number belongs (pydantic would read them as 1 and 0)."""
        takes_bool = cls.model_fields[str(info.field_name)].annotation is bool
        if not takes_bool and _holds_bool(value):
            raise ValueError(f"a boolean where a number belongs, got {value!r}; write a number")
        return value


class ModelConfig(_Frozen):
    arch: Literal["fcn", "resnet"] = "fcn"  # the seed's two architectures
    width: int = Field(256, gt=0)  # m: hidden width of every layer (memory: see core/_size.py)
    depth: int = Field(3, gt=0, le=MAX_DEPTH)  # L: hidden layers (fcn) or residual blocks (resnet)
    alpha: float = Field(1.0, gt=0)  # residual branch scale (resnet only); the seed uses 1

    @field_validator("alpha")
    @classmethod
    def _finite_alpha(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return v


# --- data: one type per kind --------------------------------------------------------------


class _Data(_Frozen):
    kind: str  # overridden by each kind with its literal name (the union's discriminator)
    n: int = Field(6, ge=2)  # training points; the seed's synthetic run uses 6
    normalize: Literal["unit", "standardize", "none"] = "unit"  # unit: every x on S^{d-1}
    n_probe: int = Field(0, ge=0)  # extra untrained points whose outputs are tracked

    @property
    def input_dim(self) -> int:
        """d, the input dimension of the points this kind gives."""
        raise NotImplementedError


class CircleData(_Data):
    """The seed's n points evenly spaced on the unit circle, labels alternating."""

    kind: Literal["circle"] = "circle"
    # the circle is 2-d: any other d fails when the data are built (not here, so that a sweep
    # may zip data.kind with data.d and check each grid value on its own)
    d: int = Field(2, ge=1)

    @property
    def input_dim(self) -> int:
        return 2


class SphereData(_Data):
    """n points uniform on S^{d-1}, labels Bernoulli(1/2), from ``seed``."""

    kind: Literal["sphere"] = "sphere"
    d: int = 2  # input dimension: points on S^{d-1}
    seed: int = Field(0, ge=0, le=MAX_SEED)  # the points and labels; not the net's seed

    @field_validator("d")
    @classmethod
    def _at_least_two(cls, v: int) -> int:
        if v < 2:
            raise ValueError(
                f"S^0 has two points, so n > 2 points would repeat, got d = {v}; use data.d >= 2"
            )
        return v

    @property
    def input_dim(self) -> int:
        return self.d


class _ImageData(_Data):
    classes: list[int] | Literal["parity"] = "parity"  # two digits, or odd (1) vs even (0)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # which images are drawn; not the net's seed

    @field_validator("classes")
    @classmethod
    def _two_digits(cls, v: list[int] | str) -> list[int] | str:
        if isinstance(v, str):  # "parity", the only string the type admits
            return v
        if not (len(v) == 2 and v[0] != v[1] and all(0 <= c <= 9 for c in v)):
            raise ValueError(
                "needs two distinct digits in 0..9 (label 0, label 1), e.g. [3, 8], or 'parity'"
            )
        return v


class DigitsData(_ImageData):
    """scikit-learn's bundled 8x8 digits (1797 images, no download): d = 64."""

    kind: Literal["digits"] = "digits"

    @property
    def input_dim(self) -> int:
        return 64


class MnistData(_ImageData):
    """The MNIST training set (60000 images of 28 x 28) read from ``path``: d = 784."""

    kind: Literal["mnist"] = "mnist"
    path: str | None = None  # IDX files (optionally .gz) or a torchvision folder

    @property
    def input_dim(self) -> int:
        return 784


DATA_KINDS: dict[str, type[_Data]] = {
    "circle": CircleData,
    "sphere": SphereData,
    "digits": DigitsData,
    "mnist": MnistData,
}
# every data field of some kind, in a stable order (known keys, the trial id's legacy view)
DATA_FIELDS = tuple(dict.fromkeys(f for c in DATA_KINDS.values() for f in c.model_fields))


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("kind", "circle")  # circle is the default kind
    return getattr(value, "kind", None)


def _drop_unused(value: Any) -> Any:
    """Drop the known data fields that ``value``'s kind does not use (they change nothing)."""
    if not isinstance(value, dict):
        return value
    cls = DATA_KINDS.get(_kind_of(value) or "")
    if cls is None:
        return value  # the discriminator names the unknown kind
    unused = set(DATA_FIELDS) - set(cls.model_fields)
    return {k: v for k, v in value.items() if k not in unused}


DataConfig = Annotated[
    Annotated[CircleData, Tag("circle")]
    | Annotated[SphereData, Tag("sphere")]
    | Annotated[DigitsData, Tag("digits")]
    | Annotated[MnistData, Tag("mnist")],
    Discriminator(_kind_of),
    BeforeValidator(_drop_unused),
]


def data_config(**fields: Any) -> _Data:
    """The data config of ``fields['kind']`` (default circle), e.g. ``data_config(kind="digits")``.

    Fields the kind does not use are dropped. Raises pydantic's ValidationError on a bad value
    (``core.config_from_dict`` turns it into a one-line :class:`ConfigError`).
    """
    return TrialConfig.model_validate({"data": fields}).data


# --- training, tracking, checkpoints --------------------------------------------------------


class TrainConfig(_Frozen):
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"  # mse is the lazy-regime control
    lr: float = Field(0.1, gt=0)  # GD step (t = step * lr); with t_max: the first step only
    epochs: int = Field(1000, ge=0)  # full-batch steps (one epoch = one step); plain GD
    # gradient-flow time to reach with adaptive steps (train.lr is then the first step and
    # train.epochs is ignored); late cross-entropy dynamics live in log t, see core/_flow.py
    t_max: float | None = Field(None, gt=0)  # gradient-flow time to reach, steps adaptive; None: GD
    flow_tol: float = Field(1e-3, gt=0)  # local error in f per adaptive step (docs/concepts.md)
    weight_decay: float = Field(0.0, ge=0)  # L2 penalty strength; 0 is the seed's setting
    weight_decay_center: Literal["init", "zero"] = "init"  # penalize theta - theta_0, or theta
    label_smoothing: float = Field(0.0, ge=0, lt=0.5)  # soft targets y(1-e) + e/2; 0 = hard

    @field_validator("lr", "t_max", "flow_tol", "weight_decay")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError(f"must be finite, got {v}")
        return v


class TrackConfig(_Frozen):
    log_points: int = Field(200, ge=0)  # log-spaced rows over [1, epochs] (t_max: over [lr, t_max])
    every: int = Field(0, ge=0)  # also track every k steps (0 = off); periodic and log mix
    kernel: bool = True  # compute K_t at tracked steps (the expensive part, O(n^2 m L))
    kernel_full_max_n: int = Field(32, ge=1)  # store all kernel pairs up to this many points
    kernel_pairs: list[tuple[int, int]] | None = None  # pairs stored above that n (default diag+)
    ntk_block: int | None = Field(None, gt=0)  # points per block in empirical_ntk (memory cap)
    flips: bool = True  # count activation flips since t = 0, and the flip-free drift_smooth


class CheckpointConfig(_Frozen):
    every: int = Field(0, ge=0)  # steps between checkpoints; 0 = no periodic checkpoints
    minutes: float = Field(5.0, ge=0)  # also checkpoint after this much wall time (0 = off)
    keep_final: bool = True  # keep the final parameters (checkpoint.pt) after the run ends


class TrialConfig(_Frozen):
    model: ModelConfig = ModelConfig()
    data: DataConfig = CircleData()
    train: TrainConfig = TrainConfig()
    track: TrackConfig = TrackConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    seed: int = Field(0, ge=0, le=MAX_SEED)  # seeds the network's N(0,1) initialization only
    dtype: Literal["float64", "float32"] = "float64"  # float64 where precision is under test
    device: str = "auto"  # auto | cpu | cuda | cuda:K

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"must be auto, cpu, cuda or cuda:K, got {v!r}")
        return v

    @model_validator(mode="after")
    def _schedule_fits(self) -> TrialConfig:
        if self.train.epochs > MAX_EPOCHS:
            raise ValueError(f"train.epochs={self.train.epochs} exceeds {MAX_EPOCHS}")
        every = self.track.every
        rows = self.track.log_points + (self.train.epochs // every if every else 0)
        if rows > MAX_TRACKED:
            raise ValueError(
                f"track schedule gives {rows} tracked steps, over {MAX_TRACKED}; "
                "raise track.every or lower track.log_points"
            )
        return self

    @model_validator(mode="after")
    def _sizes_fit(self) -> TrialConfig:
        from ._size import check_sizes  # sizes need the config types: imported when used

        check_sizes(self)
        return self


# --- the trial id ---------------------------------------------------------------------------

# the data section as every config wrote it before data became one type per kind; a field the
# kind does not use is hashed at this value, so ids of configs that left it unset are unchanged
_LEGACY_DATA = {
    "kind": "circle",
    "n": 6,
    "d": 2,
    "classes": "parity",
    "path": None,
    "seed": 0,
    "normalize": "unit",
    "n_probe": 0,
}


def id_view(config: TrialConfig) -> dict[str, Any]:
    """The values the trial id hashes: the full config, minus what cannot change the trial.

    - data fields the kind does not use hash as their legacy defaults (``_LEGACY_DATA``);
    - ``train.t_max`` and ``train.flow_tol`` are left out when ``t_max`` is None (plain GD
      ignores flow_tol), so plain-GD ids are those from before adaptive steps existed.
    """
    raw = config.model_dump(mode="json")
    raw["data"] = {**_LEGACY_DATA, **raw["data"]}
    if raw["train"]["t_max"] is None:
        del raw["train"]["t_max"], raw["train"]["flow_tol"]
    return raw


def trial_id(config: TrialConfig) -> str:
    """A stable 16-hex-digit hash of the resolved config (canonical, sorted JSON of ``id_view``)."""
    blob = json.dumps(id_view(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
