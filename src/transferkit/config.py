"""Validated settings for training runs (pydantic 2), and reading them from YAML safely.

A field of the wrong type or range raises :class:`ConfigError` with one line that names the
field, the value and what is allowed. Numbers are strict about ``true``/``false`` and text
and must be finite. :func:`read_yaml` bounds what it reads (file size, expanded node count,
depth); :func:`normalize_settings` accepts the natural spellings of a settings file.
"""

from __future__ import annotations

import difflib
import re
import reprlib
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    Strict,
    ValidationError,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError

from transferkit.errors import ConfigError


def _number(kind: str) -> BeforeValidator:
    """Refuse true/false and text where a number belongs (pydantic's lax mode takes them)."""

    def check(value: Any) -> Any:
        if isinstance(value, bool | str | bytes):
            what = "true/false" if isinstance(value, bool) else "text"
            raise PydanticCustomError(f"{kind}_type", f"Input should be a valid {kind}, not {what}")
        return value

    return BeforeValidator(check)


Int = Annotated[int, _number("integer")]
Float = Annotated[float, _number("number")]  # an int is fine (lr: 1)
Bool = Annotated[bool, Strict()]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class OptimConfig(_Strict):
    """Optimizer and learning-rate schedule.

    Schedules: ``constant``; ``step``: ``lr * gamma^floor(epoch / step_size)``; ``multistep``:
    ``lr * gamma^k`` with ``k`` the number of ``milestones`` <= the 0-based epoch, so with
    ``[150, 180, 210]`` epochs 0-149 run at ``lr`` and the first decay applies from epoch index
    150 (the 151st epoch), as RepDistiller's and mdistiller's ``epoch > milestone`` on 1-based
    epochs; ``inverse`` (DANN's): ``lr * (1 + inv_alpha * t)^(-inv_beta)`` at step t;
    ``cosine`` over all steps. ``milestones`` are recorded (config.yaml, checkpoints) only with
    the ``multistep`` schedule, so runs recorded before the field existed still resume.
    ``max_norm`` (Srivastava et al. 2014, with dropout): after every step each unit's incoming
    weight vector ``w`` becomes ``min(1, c / ||w||_2) * w``.
    """

    name: Literal["sgd", "adam"] = Field("sgd", description="the optimizer: sgd or adam")
    # at most 1e30: beyond it, SGD's update overflows float32 (a traceback from torch)
    lr: Float = Field(0.01, gt=0, le=1e30,
                      description="learning rate (the schedule's starting value)")
    momentum: Float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: Bool = False
    weight_decay: Float = Field(0.0, ge=0, description="L2 weight decay")
    schedule: Literal["constant", "step", "multistep", "inverse", "cosine"] = Field(
        "constant", description="learning-rate schedule: constant; step (times gamma every "
        "step_size epochs); multistep (times gamma at each milestone); inverse (DANN's "
        "lr * (1 + inv_alpha t)^-inv_beta at step t); cosine (over all steps)")
    step_size: Int = Field(10, ge=1, description="step schedule: epochs between decays")
    milestones: list[Int] = Field(
        default_factory=lambda: [150, 180, 210],
        description="multistep: epochs (0-based index) from which lr is multiplied by gamma",
    )
    gamma: Float = Field(0.1, gt=0, le=1, description="step / multistep: the decay factor")
    inv_alpha: Float = Field(0.001, ge=0)
    inv_beta: Float = Field(0.75, ge=0)
    max_norm: Float | None = Field(None, gt=0, description="after each step, rescale each "
                                   "unit's incoming weights to L2 norm at most this")
    lr_factors: dict[str, Annotated[Float, Field(ge=0)]] = Field(
        default_factory=dict,
        description="learning-rate factor per student layer, e.g. {features: 0.1}",
    )

    @field_validator("milestones")
    @classmethod
    def _check_milestones(cls, value: list[int]) -> list[int]:
        if any(m < 1 for m in value) or value != sorted(set(value)):  # strictly increasing
            raise PydanticCustomError(
                "milestones",
                "milestones must be strictly increasing epochs >= 1, e.g. [150, 180, 210]",
            )
        return value

    @model_serializer(mode="wrap")
    def _record(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.schedule != "multistep":
            data.pop("milestones", None)
        return data


class TrainConfig(_Strict):
    """How long and how to train; ``steps_per_epoch`` defaults to ``len(train) // batch_size``."""

    epochs: Int = Field(10, ge=1, description="passes of steps_per_epoch steps")
    batch_size: Int = Field(128, ge=1, description="labelled (source) rows per step")
    steps_per_epoch: Int | None = Field(None, ge=1, description="steps per epoch (default: "
                                        "training rows // batch size)")
    target_batch_size: Int | None = Field(None, ge=1, description="target rows per step "
                                          "(adapt; default: the batch size)")
    seed: Int = Field(0, ge=0, le=2**63 - 1, description="random seed of the initial "
                      "weights, batch order and augmentation (0 to 2**63 - 1)")
    device: str = Field("auto", description="auto (a GPU when there is one), cpu, cuda or "
                        "cuda:1")
    eval_batch_size: Int = Field(1024, ge=1)
    eval_every: Int = Field(1, ge=1)
    progress: Bool = True
    check_divergence: Bool = Field(
        True, description="stop a run whose loss explodes or whose predictions collapse"
    )
    amp: Annotated[Literal["off", "auto", "bf16"], BeforeValidator(_amp_value)] = Field(
        "off", description="bf16 autocast: off, bf16, or auto (bf16 only where the GPU or CPU "
        "computes it natively: AMX / AVX-512 BF16); true means bf16")
    compile: Annotated[Literal["off", "on", "graphs"], BeforeValidator(_compile_value)] = Field(
        "off", description="torch.compile the training step: on, or graphs (plus CUDA graphs on "
        "a CUDA device); anything that cannot be compiled runs eagerly, with a line saying why; "
        "true means on")
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="auto: channels-last weights for networks with 2-d convolutions on "
        "the CPU (oneDNN's faster layout; same values); channels_last or contiguous to choose")
    data_on_device: Literal["auto", "off"] = Field(
        "auto", description="auto: keep the training tensors on the GPU when they take at most "
        "a quarter of its free memory (no copy per step); off: copy each batch")
    jitter: Int = Field(0, ge=0, description="random translation of up to N pixels (images)")
    augment: Literal["none", "flip", "cifar"] = Field(
        "none", description="none, flip (horizontal), or cifar (random crop with 4-pixel "
        "padding + horizontal flip)"
    )
    select: Literal["last", "source_accuracy", "entropy", "im", "snd", "dev", "oracle"] = Field(
        "last", description="the kept epoch: last, a validator (source_accuracy, entropy, im, "
        "snd, dev) or oracle (target-test labels, only when asked for); adapt only")
    source_holdout: float = Field(
        0.1, ge=0.0, lt=0.5, description="share of the source training set held out for the "
        "validators (adapt); the same rows for every seed")
    tensorboard: Bool = Field(
        False, description="also write the per-epoch scalars to RUN/tensorboard (needs the "
        "tensorboard extra)")
    optim: OptimConfig = Field(default_factory=OptimConfig)


def validate(model: type[BaseModel], data: dict[str, Any], where: str = "config") -> Any:
    """Build ``model`` from ``data``, turning pydantic's report into one clear line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def format_validation_error(exc: ValidationError, where: str = "config", shown: int = 5) -> str:
    """One line for pydantic's report: the first ``shown`` errors, each value cut short."""
    errors = exc.errors(include_url=False, include_context=False)
    parts = []
    for err in errors[:shown]:
        field = ".".join(short_text(p, 40) for p in err["loc"]) or "(root)"
        value = err.get("input")
        got = "" if isinstance(value, dict) else f" (got {short_repr(value)})"
        parts.append(f"{field}: {short_text(err['msg'], 200)}{got}")
    if len(errors) > shown:
        parts.append(f"and {len(errors) - shown} more")
    return f"{where}: " + "; ".join(parts)


class _ShortRepr(reprlib.Repr):
    """reprlib that never sorts or walks more of a container than it shows."""

    def repr_dict(self, x: dict, level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                 for k, v in islice(x.items(), self.maxdict)]
        return "{" + ", ".join(items) + (", ..." if len(x) > self.maxdict else "") + "}"

    def repr_set(self, x: set, level: int) -> str:
        return self._repr_iterable(x, level, "{", "}", self.maxset)

    def repr_frozenset(self, x: frozenset, level: int) -> str:
        return self._repr_iterable(x, level, "frozenset({", "})", self.maxfrozenset)


_REPR = _ShortRepr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 60, 40, 60
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 5


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` of at most ``limit`` characters, in time bounded whatever ``value`` is."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a broken __repr__ of a user object
        text = f"<{type(value).__name__}>"
    return short_text(text, limit)


def short_text(value: Any, limit: int = 80) -> str:
    """``str(value)`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(value)[: limit * 4].split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ModelSpec(_Strict):
    """A registered model name (or ``package.module:factory``) with its options."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


def _switch(on: str) -> Callable[[Any], Any]:
    """A validator for a named setting that also takes a boolean: ``true`` reads as ``on``,
    ``false`` as ``off``; names are case-insensitive."""

    def value(given: Any) -> Any:
        if given is True:
            return on
        if given is False:
            return "off"
        return given.strip().lower() if isinstance(given, str) else given

    return value


_amp_value = _switch("bf16")  # the old boolean amp flag
_compile_value = _switch("on")


def _method_list(value: Any) -> Any:
    """``[kd, fitnet]`` (YAML) -> ``"kd+fitnet"``; the methods are checked by name later."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "+".join(value)
    return value


class RunConfig(_Strict):
    """Everything one CLI run (or YAML file) asks for; saved as ``config.yaml`` in the run."""

    command: Literal["train", "distill", "adapt"]
    data: str = "digits"
    data_dir: str | None = None
    data_options: dict[str, Any] = Field(
        default_factory=dict, description="how to read data files: x, y, test, normalize, ...")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(name="mlp"))
    method: Annotated[str, BeforeValidator(_method_list)] = "supervised"
    method_options: dict[str, Any] = Field(default_factory=dict)
    teacher: ModelSpec | None = None
    teacher_checkpoint: str | list[str] | None = None
    teacher_train: TrainConfig | None = None
    teacher_input: str | dict[str, Any] | None = Field(
        None, description="what a foreign teacher expects: mean, std, size, channels, range")
    train: TrainConfig = Field(default_factory=TrainConfig)
    out: str | None = None
    feature_layer: str | None = None
    generations: Int = Field(1, ge=1, description="born-again generations (distill)")


# ---- reading YAML safely ----------------------------------------------------------------------
MAX_YAML_BYTES = 1 << 20  # a settings file is a few hundred bytes
MAX_YAML_NODES = 100_000  # values after expanding aliases (*name): stops "billion laughs"
MAX_YAML_DEPTH = 50


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a number (YAML 1.2; PyYAML's 1.1 reads text)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The YAML document in ``path``: at most 1 MiB of UTF-8 text, bounded as :func:`parse_yaml`."""
    path = Path(path)
    where = f"{what} {path}"
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.__class__.__name__}: {exc.strerror or exc}") from None
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(
            f"{where} is larger than {MAX_YAML_BYTES >> 10} KiB; a settings file holds a few "
            "lines: check that the path names the right file"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "it must be a YAML text file saved as UTF-8"
        ) from None
    return parse_yaml(text, where)


def parse_yaml(text: str, where: str) -> Any:
    """One YAML document (safe types only), refused in one line when it is not valid YAML, is
    nested too deeply, repeats a key, or expands through aliases to more than
    ``MAX_YAML_NODES`` values. Every value is built at most once, so nothing blows up."""
    loader = None
    try:
        loader = _Loader(text)  # refuses control characters right away
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits, a bad date
        raise ConfigError(f"{where}: a value cannot be read: {short_text(exc, 120)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        parts = [exc.context if exc.context and not exc.context.startswith("while") else None,
                 exc.problem]
        problem = ", ".join(p for p in parts if p) or type(exc).__name__
        return short_text(problem, 160) + at
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        return f"character #x{exc.character:04x} is not allowed (position {exc.position})"
    return short_text(exc, 160)


def _check_nodes(root: yaml.Node, where: str) -> None:
    """Count the values ``root`` expands to, visiting each node once (an alias shares its
    anchor's node), and refuse recursion, deep nesting and a key given twice."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConfigError(f"{where}: an alias (*name) refers to a value that contains it")
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep")
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            seen: set[tuple[str, str]] = set()
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value != "<<":
                    if (k.tag, k.value) in seen:
                        raise ConfigError(
                            f"{where}: key {short_repr(k.value)} appears twice in one mapping "
                            f"(line {k.start_mark.line + 1}); keep one"
                        )
                    seen.add((k.tag, k.value))
                children += [k, v]
        open_nodes.add(key)
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_YAML_NODES:
                raise ConfigError(
                    f"{where}: the YAML expands to more than {MAX_YAML_NODES:,} values (aliases "
                    "such as *name repeat all that &name holds); a settings file needs far "
                    "fewer: write the values out"
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    size(root, 0)


# ---- the spellings a settings file may use -----------------------------------------------------
RUN_FIELDS = tuple(RunConfig.model_fields)
TRAIN_FIELDS = tuple(k for k in TrainConfig.model_fields if k != "optim")
OPTIM_FIELDS = tuple(k for k in OptimConfig.model_fields if k != "name")
# Names users try that difflib would not suggest; only suggested, never accepted.
_SYNONYMS = {
    "learning_rate": "lr", "learningrate": "lr", "lr_schedule": "schedule",
    "scheduler": "schedule", "lr_scheduler": "schedule", "num_epochs": "epochs",
    "n_epochs": "epochs", "max_epochs": "epochs", "bs": "batch_size", "wd": "weight_decay",
    "optimiser": "optimizer", "random_seed": "seed", "dataset": "data", "data_root": "data_dir",
    "data_path": "data_dir", "output": "out", "output_dir": "out", "out_dir": "out",
    "run_dir": "out", "student": "model", "arch": "model", "architecture": "model",
    "options": "method_options", "method_opts": "method_options", "steps": "steps_per_epoch",
    "teacher_epochs": "teacher_train", "gpu": "device",
}


def normalize_settings(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """``raw`` settings in :class:`RunConfig`'s layout, accepting the natural spellings.

    Accepted besides the canonical form: ``batch-size`` for ``batch_size``; training settings
    (``epochs``, ...) and optimizer settings (``lr``, ...) at the top level; optimizer settings
    directly under ``train``; ``optimizer: adam`` or ``optim: adam`` for the optimizer name;
    ``model: mlp`` and model options written next to ``name``. A setting given in two
    spellings with different values, or an unknown key, is a :class:`ConfigError` that names
    it (and the closest valid names).
    """
    out = _Layout(where)
    top = "at the top level"
    for key, value in raw.items():
        name = _key(key, top, where)
        if name in ("train", "teacher_train"):
            if value is not None:
                out.section((name,))
                _train_section(out, (name,), _section(value, name, where), name)
        elif name in ("model", "teacher"):
            if value is not None:
                _model(out, name, value, str(key))
        elif name == "method_options":
            out.section((name,))
            for option, setting in _section(value, name, where).items():
                out.put((name, _key(option, "in method_options", where)), setting,
                        f"method_options.{option}")
        elif name in ("optim", "optimizer"):
            _optim_value(out, ("train", "optim"), value, str(key))
        elif name in TRAIN_FIELDS:
            out.put(("train", name), value, str(key))
        elif name in OPTIM_FIELDS:
            out.put(("train", "optim", name), value, str(key))
        elif name in RUN_FIELDS:
            out.put((name,), value, str(key))
        else:
            valid = (*RUN_FIELDS, *TRAIN_FIELDS, *OPTIM_FIELDS, "optimizer")
            _unknown(key, top, valid, where, " (method options go under method_options:)")
    return out.tree


class _Layout:
    """The canonical settings being built, with the spelling that set each one."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.tree: dict[str, Any] = {}
        self.spelled: dict[tuple[str, ...], str] = {}

    def section(self, path: tuple[str, ...]) -> dict[str, Any]:
        node = self.tree
        for part in path:
            node = node.setdefault(part, {})
        return node

    def put(self, path: tuple[str, ...], value: Any, spelled: str) -> None:
        parent = self.section(path[:-1])
        if path in self.spelled:
            old = parent[path[-1]]
            if old != value or isinstance(old, bool) != isinstance(value, bool):
                raise ConfigError(
                    f"{self.where}: {self.spelled[path]!r} and {spelled!r} both set "
                    f"{'.'.join(path)}, to {short_repr(old, 40)} and {short_repr(value, 40)}; "
                    "keep one"
                )
            return
        parent[path[-1]] = value
        self.spelled[path] = spelled


def _key(key: Any, section: str, where: str) -> str:
    if not isinstance(key, str):
        raise ConfigError(f"{where}: field names are text, got {short_repr(key, 40)} {section}")
    return key.strip().replace("-", "_")


def _section(value: Any, field: str, where: str, hint: str = "") -> dict[Any, Any]:
    """A settings section as a new dict (absent or null: {}); anything else is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where}: {field} must be a mapping of fields, got {short_repr(value)}{hint}"
        )
    return dict(value)


def training_setting_guess(name: str) -> str:
    """`` (did you mean the training setting 'epochs'?)`` for a method option that looks like
    a misspelt training or optimizer setting (``epoch``, ``learning_rate``), else ``""``:
    from Python, any keyword that is not a setting is taken for a method option."""
    valid = (*TRAIN_FIELDS, *OPTIM_FIELDS, "optimizer")
    lowered = name.lower()
    guesses = [_SYNONYMS[lowered]] if _SYNONYMS.get(lowered) in valid else []
    guesses = guesses or difflib.get_close_matches(lowered, valid, n=2, cutoff=0.75)
    if not guesses:
        return ""
    return f" (did you mean the training setting {' or '.join(map(repr, guesses))}?)"


def _unknown(key: Any, section: str, valid: tuple[str, ...], where: str, more: str = "") -> None:
    name = _key(key, section, where).lower()
    guesses = [_SYNONYMS[name]] if _SYNONYMS.get(name) in valid else []
    guesses = guesses or difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if guesses:
        hint = "did you mean " + " or ".join(repr(g) for g in guesses) + "?"
    else:
        hint = "valid fields: " + ", ".join(sorted(set(valid))) + more
    raise ConfigError(f"{where}: unknown field {short_repr(key, 40)} {section}; {hint}")


def _train_section(out: _Layout, prefix: tuple[str, ...], section: dict, name: str) -> None:
    for key, value in section.items():
        field = _key(key, f"in {name}", out.where)
        spelled = f"{name}.{key}"
        if field in ("optim", "optimizer"):
            _optim_value(out, (*prefix, "optim"), value, spelled)
        elif field in TRAIN_FIELDS:
            out.put((*prefix, field), value, spelled)
        elif field in OPTIM_FIELDS:
            out.put((*prefix, "optim", field), value, spelled)
        else:
            valid = (*TRAIN_FIELDS, *OPTIM_FIELDS, "optim", "optimizer")
            _unknown(key, f"in {name}", valid, out.where)


def _optim_value(out: _Layout, path: tuple[str, ...], value: Any, spelled: str) -> None:
    """``optim``/``optimizer``: an optimizer name, or a mapping of optimizer settings."""
    if isinstance(value, str):
        out.put((*path, "name"), value, spelled)
        return
    name = ".".join(path)
    section = _section(value, name, out.where, " (or an optimizer name: sgd, adam)")
    out.section(path)
    for key, setting in section.items():
        field = _key(key, f"in {name}", out.where)
        field = "name" if field == "optimizer" else field
        if field not in (*OPTIM_FIELDS, "name"):
            _unknown(key, f"in {name}", (*OPTIM_FIELDS, "name"), out.where)
        out.put((*path, field), setting, f"{spelled}.{key}")


def _model(out: _Layout, field: str, value: Any, spelled: str) -> None:
    """``model``/``teacher``: a name, or ``{name, options}`` with options also beside name."""
    if field == "teacher" and isinstance(value, str) and (
        Path(value).exists() or value.endswith(".pt")
    ):
        out.put(("teacher_checkpoint",), value, spelled)
        return
    if isinstance(value, str):
        value = {"name": value}
    section = _section(value, field, out.where, f" (write {field}: {{name: mlp, options: ...}})")
    spec: dict[str, Any] = {"options": {}}
    for key, setting in section.items():
        name = _key(key, f"in {field}", out.where)
        if name == "name":
            spec["name"] = setting
            continue
        if name == "options":
            given = _section(setting, f"{field}.options", out.where)
        else:
            given = {key: setting}
        for option, option_value in given.items():
            option = _key(option, f"in {field}.options", out.where)
            if option in spec["options"] and spec["options"][option] != option_value:
                raise ConfigError(
                    f"{out.where}: {field} option {option!r} is given twice, with "
                    f"{short_repr(spec['options'][option], 40)} and {short_repr(option_value, 40)}"
                    "; keep one"
                )
            spec["options"][option] = option_value
    out.put((field,), spec, spelled)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (mappings only; lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def settings_diff(old: dict[str, Any], new: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Dotted names of the settings that differ between a saved record and this run.

    A setting the record lacks because it was added to transferkit later matches when this run
    leaves it at its default (``defaults``, flattened the same way): older runs still resume.
    """
    old_flat, new_flat, base = flatten(old), flatten(new), flatten(defaults)
    return sorted(
        k for k in set(old_flat) | set(new_flat)
        if old_flat.get(k) != new_flat.get(k)
        and not (k not in old_flat and k in base and new_flat.get(k) == base[k])
    )
