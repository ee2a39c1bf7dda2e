"""The one parameter schema shared by the CLI, notebooks and sweeps.

A profile in ``params/`` is YAML data validated against :class:`Params`. Any error names the
file, the key and what is allowed, before any work starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from robnb.models.ladder import LADDER
from robnb.tasks import EMPTY_MODIFIABLE_TASKS, TASK_NAMES

PARAMS_DIR = Path(__file__).resolve().parent.parent / "params"
FAMILIES = ("local-neox", "pythia", "qwen2.5", "smollm2")
PYTHIA_SIZES = ("14m", "31m", "70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b")
QWEN_SIZES = ("0.5B", "1.5B", "3B", "7B", "14B")
FAMILY_SIZES: dict[str, tuple[str, ...]] = {
    "local-neox": tuple(LADDER), "pythia": PYTHIA_SIZES, "qwen2.5": QWEN_SIZES,
    "smollm2": ("135m",),
}
ATTACKS = ("gcg", "random_token", "beast")
EXTRA_MODELS = ("smollm2-135m",)
PLACEMENTS = {"suffix": 1.0, "prefix": 0.0, "infix90": 0.9}

def require_known(names, allowed, what: str) -> None:
    """One message for every unknown-name check: what is unknown and what is allowed."""
    bad = [n for n in names or [] if n not in allowed]
    if bad:
        raise ValueError(f"unknown {what}(s) {bad}; allowed: {', '.join(allowed)}")


PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PretrainParams(Strict):
    corpus: Literal["bbc_news"] = "bbc_news"
    vocab_size: PosInt = 4096
    seq_len: PosInt = 128
    batch_size: PosInt = 16
    steps: PosInt = 300
    lr: PosFloat = 3e-3
    warmup_steps: NonNegInt = 30
    seed: NonNegInt = 0
    eval_batches: PosInt = 8


class FinetuneParams(Strict):
    n_train: PosInt = 20_000
    n_train_per_task: dict[str, PosInt] = Field(default_factory=dict)  # overrides n_train
    n_val: PosInt = 200
    epochs: PosInt = 3
    batch_size: PosInt = 8
    lr: PosFloat = 1e-5
    optimizer: Literal["adafactor", "adamw"] = "adafactor"
    schedule: Literal["linear", "constant"] = "linear"
    warmup_steps: NonNegInt = 0
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_tokens: PosInt = 1000
    grad_clip: PosFloat = 1.0

    @field_validator("n_train_per_task")
    @classmethod
    def _known(cls, v: dict[str, int]) -> dict[str, int]:
        require_known(v, TASK_NAMES, "task")
        return v

    def train_size(self, task: str) -> int:
        return self.n_train_per_task.get(task, self.n_train)


class AttackSpec(Strict):
    """One attack to run: which algorithm, where, how long, how strong."""
    name: Literal["gcg", "random_token", "beast"]
    placement: Literal["suffix", "prefix", "infix90"] = "suffix"
    iterations: PosInt = 10
    n_attack_tokens: PosInt = 10
    top_k: PosInt = 256
    n_candidates: PosInt = 128
    beam_width: PosInt = 7
    branching: PosInt = 7
    seed: NonNegInt = 0
    tasks: list[str] | None = None  # restrict this attack to some tasks (default: all)
    # GCG: rank each iteration's candidates in bfloat16 (a low-precision copy of the model),
    # then re-score the best-ranked ones in the model's own precision; only those exact scores
    # are kept and logged. "model": every candidate in the model's precision.
    ranking_dtype: Literal["model", "bfloat16"] = "model"

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str] | None) -> list[str] | None:
        require_known(v, TASK_NAMES, "task")
        return v

    @model_validator(mode="after")
    def _placement_exists(self) -> "AttackSpec":
        same = [t for t in self.tasks or [] if t in EMPTY_MODIFIABLE_TASKS]
        if same and self.placement != "suffix":
            raise ValueError(f"placement {self.placement} on {same}: their attack-modifiable "
                             "text is empty, so prefix and infix insert exactly where the suffix "
                             "does; use placement: suffix there")
        if self.ranking_dtype != "model" and self.name != "gcg":
            raise ValueError(f"ranking_dtype {self.ranking_dtype} is a GCG option (it ranks GCG's "
                             f"candidates); {self.name} scores every attack exactly: leave it 'model'")
        return self

    @property
    def position(self) -> float:
        return PLACEMENTS[self.placement]

    def applies_to(self, task: str) -> bool:
        """Whether this attack runs on ``task``: not restricted to other tasks, and not a
        prefix/infix on a task whose modifiable text is empty (it would repeat the suffix)."""
        return ((self.tasks is None or task in self.tasks)
                and (self.placement == "suffix" or task not in EMPTY_MODIFIABLE_TASKS))


class AttackParams(Strict):
    n_examples: PosInt = 200
    batch_examples: PosInt = 8
    attacks: list[AttackSpec] = Field(default_factory=list)
    tasks: list[str] | None = None  # default: all tasks of the profile


class AdversarialTrainingParams(Strict):
    """Adversarial training (paper A): rounds of attack → pool → one epoch on clean + pooled.

    Each round attacks ``n_attack_per_round`` fresh clean training examples with ``attack`` at
    the round's strength (linear ramp ``ramp_start_iterations`` → ``ramp_end_iterations`` over
    the size's rounds; ``ramp: false`` uses ``ramp_end_iterations`` every round, the no-ramp
    ablation; the spec's own ``iterations`` is not used), adds the (successful) adversarial
    examples with their true labels to a pool, then trains ``epochs_per_round`` epoch(s) on at
    most ``max_train`` examples, at most ``max_adversarial_fraction`` of them drawn from the pool
    by rank (rank = ½ recency rank + ½ loss rank, weight ∝ exp(pool_temperature·(rank − max
    rank)), without replacement), the rest clean. The optimizer persists across rounds.
    """
    tasks: list[str] | None = None  # default: all tasks of the profile
    # int: every size; list: one per model of the profile (sizes, then extra models) in order;
    # mapping: size -> rounds. Then clipped to [min_rounds, max_rounds] (paper: [5, 60]).
    rounds: PosInt | list[PosInt] | dict[str, PosInt] = 10
    min_rounds: PosInt | None = None
    max_rounds: PosInt | None = None
    n_attack_per_round: PosInt = 200
    pool_only_successful: bool = True  # paper: only successful attacks enter the pool
    max_train: PosInt = 1000
    max_adversarial_fraction: Annotated[float, Field(ge=0, le=1)] = 0.8
    pool_temperature: PosFloat = 0.005
    # loss rank from the current model's loss on each pool example (re-scored every round,
    # counted as defense compute) or from the loss the attack logged when it was found
    pool_loss: Literal["current", "attack"] = "current"
    attack: AttackSpec = Field(default_factory=lambda: AttackSpec(name="gcg"))
    ramp: bool = True
    ramp_start_iterations: PosInt = 8
    ramp_end_iterations: PosInt = 64
    optimizer: Literal["adafactor", "adamw"] = "adafactor"
    lr: PosFloat = 1e-5
    schedule: Literal["linear", "constant"] = "constant"
    batch_size: PosInt = 8
    epochs_per_round: PosInt = 1
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    grad_clip: PosFloat = 1.0
    batch_examples: PosInt = 8  # examples attacked together
    # 0 = the fine-tuned model before any round; rounds past a size's last are ignored
    evaluate_after_rounds: list[NonNegInt] = Field(default_factory=lambda: [0])
    evaluate_last_round: bool = True
    evaluation_attacks: list[AttackSpec] = Field(default_factory=list)
    n_eval_examples: PosInt = 500
    # which round checkpoints keep their model after later rounds: all, the evaluated ones
    # (and the last), or only the last
    keep_checkpoints: Literal["all", "evaluated", "last"] = "evaluated"

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str] | None) -> list[str] | None:
        require_known(v, TASK_NAMES, "task")
        return v

    @field_validator("evaluation_attacks")
    @classmethod
    def _distinct(cls, v: list[AttackSpec]) -> list[AttackSpec]:
        seen = [(s.name, s.placement) for s in v]
        dup = sorted({k for k in seen if seen.count(k) > 1})
        if dup:
            raise ValueError(f"attack/placement repeated {dup}: records are keyed by (attack, "
                             "placement, round), and a longer attack's first iterations already "
                             "are the shorter one (same seed), so list each pair once")
        return v

    @model_validator(mode="after")
    def _ranges(self) -> "AdversarialTrainingParams":
        if self.ramp_start_iterations > self.ramp_end_iterations:
            raise ValueError(f"ramp_start_iterations ({self.ramp_start_iterations}) is above "
                             f"ramp_end_iterations ({self.ramp_end_iterations})")
        if self.min_rounds and self.max_rounds and self.min_rounds > self.max_rounds:
            raise ValueError(f"min_rounds ({self.min_rounds}) is above max_rounds "
                             f"({self.max_rounds})")
        return self


class OODMethodParams(Strict):
    """The OOD method (robnb.defenses.ood_method): training on label-preserving perturbations,
    ``fraction`` of the training examples replaced by a perturbed copy.

    ``start: base`` fine-tunes the base model in place of plain fine-tuning (same examples and
    steps, so the baseline's training compute). ``start: fine_tuned`` continues from the
    fine-tuned classifier, like adversarial training, for one epoch over ``n_train`` training
    examples (default: as many as adversarial training of that size trains on, rounds ×
    ``max_train``) at ``lr`` (default: adversarial training's), so the two methods are matched
    in starting point and training examples."""
    start: Literal["base", "fine_tuned"] = "base"
    n_train: PosInt | None = None  # start: fine_tuned only
    lr: PosFloat | None = None  # start: fine_tuned only
    fraction: Annotated[float, Field(ge=0, le=1)] = 0.5
    char_rate: Annotated[float, Field(ge=0, le=1)] = 0.05  # per word: one character edit
    case_rate: Annotated[float, Field(ge=0, le=1)] = 0.1  # per word: case change
    word_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.05  # per word: dropped (text tasks)
    seed: NonNegInt = 0


class OODParams(Strict):
    """Adversarial vs OOD robustness (stage 06): which sets, how many examples, which methods."""
    pairs: list[str] | None = None  # robnb.tasks.ood names; default: offline pairs of the tasks
    sources: dict[str, str] = Field(default_factory=dict)  # pair -> local copy or hub id
    conditions: list[Literal["baseline", "adversarial", "ood_method"]] = Field(
        default_factory=lambda: ["baseline", "adversarial", "ood_method"])
    n_examples: PosInt = 200  # clean and OOD examples per set
    n_adversarial: PosInt | None = None  # examples attacked per set; default attack.n_examples
    attacks: list[AttackSpec] | None = None  # default: attack.attacks
    max_tokens: PosInt | None = None  # token budget of OOD examples; default finetune.max_tokens
    metric: Literal["accuracy", "f1"] = "accuracy"  # robustness metric of the analysis
    robustness: Literal["retained", "raw"] = "retained"  # 1 - PDR, or the metric itself
    # sensitivity analysis: also correlate without sets whose classifier's clean metric is below
    min_clean: Annotated[float, Field(ge=0, le=1)] = 0.6
    n_boot: PosInt = 2000
    method: OODMethodParams = Field(default_factory=OODMethodParams)

    @field_validator("pairs")
    @classmethod
    def _known_pairs(cls, v: list[str] | None) -> list[str] | None:
        from robnb.tasks.ood import OOD_PAIR_NAMES

        require_known(v, OOD_PAIR_NAMES, "OOD pair")
        return v

    @field_validator("sources")
    @classmethod
    def _known_sources(cls, v: dict[str, str]) -> dict[str, str]:
        from robnb.tasks.ood import OOD_PAIR_NAMES

        require_known(v, OOD_PAIR_NAMES, "OOD pair")
        return v

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise ValueError(f"conditions must be non-empty and not repeat, got {v}")
        return v


class ResourceParams(Strict):
    """What one notebook execution asks a scheduler for (Ray), so large sizes get a GPU and small
    ones can share one. ``cpus`` is also the number of CPU threads an execution uses, on every
    executor, so local and Ray sweeps compute the same numbers."""
    cpus: PosInt = 1
    cpus_per_size: dict[str, PosInt] = Field(default_factory=dict)  # e.g. more for the largest
    memory_gb: PosFloat | None = None  # per execution; None: no reservation
    num_gpus: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)  # per size
    default_num_gpus: Annotated[float, Field(ge=0)] = 0.0  # sizes not in num_gpus

    @field_validator("num_gpus")
    @classmethod
    def _whole_or_fraction(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: g for k, g in v.items() if g > 1 and g != int(g)}
        if bad:
            raise ValueError(f"GPUs per execution must be a fraction up to 1 or a whole number, "
                             f"got {bad}")
        return v

    def gpus_for(self, size: str | None) -> float:
        return self.num_gpus.get(size, self.default_num_gpus) if size else 0.0

    def cpus_for(self, size: str | None) -> int:
        return self.cpus_per_size.get(size, self.cpus) if size else self.cpus


class Params(Strict):
    name: str
    description: str = ""
    family: Literal["local-neox", "pythia", "qwen2.5", "smollm2"] = "local-neox"
    sizes: list[str]
    extra_models: list[Literal["smollm2-135m"]] = Field(default_factory=list)
    tasks: list[str]
    seeds: list[NonNegInt] = Field(default_factory=lambda: [0])
    device: str = "auto"
    output_root: str = "outputs"
    run_name: str | None = None
    hub_revision: str | None = None
    task_sources: dict[str, str] = Field(default_factory=dict)
    model_sources: dict[str, str] = Field(default_factory=dict)
    pretrain: PretrainParams = Field(default_factory=PretrainParams)
    finetune: FinetuneParams = Field(default_factory=FinetuneParams)
    attack: AttackParams = Field(default_factory=AttackParams)
    adversarial_training: AdversarialTrainingParams = Field(
        default_factory=AdversarialTrainingParams)
    resources: ResourceParams = Field(default_factory=ResourceParams)
    ood: OODParams = Field(default_factory=OODParams)

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one task is needed")
        require_known(v, TASK_NAMES, "task")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one seed is needed")
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("auto", "cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError(f"device '{v}' not understood; allowed: auto, cpu, cuda, cuda:N")
        return v

    @field_validator("sizes")
    @classmethod
    def _sizes_of_family(cls, v: list[str], info: ValidationInfo) -> list[str]:
        family = info.data.get("family", "local-neox")
        allowed = FAMILY_SIZES.get(family, ())
        if not v:
            raise ValueError(f"at least one size is needed; allowed: {', '.join(allowed)}")
        bad = [s for s in v if s not in allowed]
        if bad:
            raise ValueError(f"unknown size(s) {bad} for family '{family}'; "
                             f"allowed: {', '.join(allowed)}")
        if len(set(v)) != len(v):
            raise ValueError(f"sizes repeat: {v}")
        return v

    @model_validator(mode="after")
    def _attack_tasks(self) -> "Params":
        for t in self.attack.tasks or []:
            if t not in self.tasks:
                raise ValueError(f"attack.tasks: '{t}' is not one of the profile's tasks {self.tasks}")
        return self

    @model_validator(mode="after")
    def _adversarial_training(self) -> "Params":
        at = self.adversarial_training
        for t in at.tasks or []:
            if t not in self.tasks:
                raise ValueError(f"adversarial_training.tasks: '{t}' is not one of the profile's "
                                 f"tasks {self.tasks}")
        models = [*self.sizes, *self.extra_models]
        if isinstance(at.rounds, list) and len(at.rounds) not in (len(self.sizes), len(models)):
            raise ValueError(f"adversarial_training.rounds: a list needs one entry per size "
                             f"{self.sizes} (or per model {models}), got {len(at.rounds)}")
        if isinstance(at.rounds, dict):
            bad = [k for k in at.rounds if k not in models]
            missing = [m for m in models if m not in at.rounds]
            if bad or missing:
                raise ValueError(f"adversarial_training.rounds: unknown size(s) {bad}, missing "
                                 f"size(s) {missing}; the profile's models: {', '.join(models)}")
        return self

    @model_validator(mode="after")
    def _ood_pairs(self) -> "Params":
        from robnb.tasks.ood import OOD_PAIRS

        for name in self.ood.pairs or []:
            if OOD_PAIRS[name].task not in self.tasks:
                raise ValueError(f"ood.pairs: '{name}' evaluates the '{OOD_PAIRS[name].task}' "
                                 f"classifier, which is not one of the profile's tasks {self.tasks}")
        return self

    @model_validator(mode="after")
    def _resource_sizes(self) -> "Params":
        allowed = (*FAMILY_SIZES.get(self.family, ()), *EXTRA_MODELS)
        for key in ("num_gpus", "cpus_per_size"):
            bad = [s for s in getattr(self.resources, key) if s not in allowed]
            if bad:
                raise ValueError(f"resources.{key}: unknown size(s) {bad} for family "
                                 f"'{self.family}'; allowed: {', '.join(allowed)}")
        return self

    @property
    def models(self) -> list[str]:
        """Every model a per-size stage runs on: the family's sizes, then the extra models."""
        return [*self.sizes, *self.extra_models]

    def family_of(self, model: str) -> str:
        return "smollm2" if model in EXTRA_MODELS else self.family

    @property
    def run(self) -> str:
        return self.run_name or self.name

    @property
    def run_dir(self) -> Path:
        return Path(self.output_root) / self.run

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ParamsError(ValueError):
    """A profile that cannot be used; the message names the file, the key and what is allowed."""


def _describe(err: ValidationError, source: str) -> str:
    lines = [f"invalid parameters in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            parent = _model_at(e["loc"][:-1])
            allowed = ", ".join(parent.model_fields) if parent else "see robnb/params.py"
            msg = f"unknown key; allowed keys here: {allowed}"
        elif e["type"] == "literal_error":
            msg = f"{msg} (got {e.get('input')!r})"
        lines.append(f"  - {key}: {msg}")
    return "\n".join(lines)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Params
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        sub = next((a for a in getattr(ann, "__args__", (ann,))
                    if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None and hasattr(ann, "__args__"):
            inner = [x for a in ann.__args__ for x in getattr(a, "__args__", ())]
            sub = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if sub is None:
            return None
        model = sub
    return model


def profile_path(profile: str | Path) -> Path:
    """A profile name (``quick``) or a path to a YAML file."""
    p = Path(profile)
    if p.suffix in (".yaml", ".yml"):
        return p
    return PARAMS_DIR / f"{profile}.yaml"


def load_params(profile: str | Path, overrides: dict[str, Any] | None = None) -> Params:
    """Load and validate a profile; ``overrides`` (dotted keys) are applied before validation."""
    path = profile_path(profile)
    if not path.is_file():
        known = sorted(p.stem for p in PARAMS_DIR.glob("*.yaml"))
        raise ParamsError(f"profile file not found: {path}; known profiles: {', '.join(known)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    return params_from_dict(data, source=str(path))


def params_from_dict(data: dict[str, Any], source: str = "<dict>") -> Params:
    try:
        params = Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(_describe(e, source)) from None
    for task, src in params.task_sources.items():
        if task not in TASK_NAMES:
            raise ParamsError(f"invalid parameters in {source}:\n  - task_sources.{task}: unknown "
                              f"task; allowed: {', '.join(TASK_NAMES)}")
        if (src.startswith((".", "/", "~")) or Path(src).exists()) and not Path(src).expanduser().exists():
            raise ParamsError(f"invalid parameters in {source}:\n  - task_sources.{task}: "
                              f"missing file or folder {src}")
    return params


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    cur = data
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
