"""The OOD method: fine-tuning with label-preserving surface perturbations (data augmentation).

Which and why. Paper B's OOD method rewrites each input in context with an instruction-following
LM before classifying; the suite's classifiers are small fine-tuned models with no generative
instruction model beside them, so the method has to live in the classifier's own training. The
standard such method is augmentation with perturbations that leave the label unchanged (noise /
EDA-style augmentation): the model is trained to give the same answer when the surface of the
input changes, which is what the OOD shifts of the suite are (new vocabulary, spelling, case,
character patterns, lengths, genre). It uses no OOD data, needs no extra inference-time
compute, and costs exactly the baseline's training compute: ``fraction`` of the training
examples are *replaced* by a perturbed copy, same count, same epochs, same steps.

Perturbations are label-preserving by construction, per task:
- text tasks (spam, sentiment, IMDB, Enron, NLI, HH): per word, with the given rates, one
  character edit (swap, delete, insert, substitute), a case change, or dropout; field markers
  such as ``Premise:`` are kept. (Whether a small edit can flip a label is an assumption, as in
  every noise augmentation; the rates are small.)
- PasswordMatch: the label depends on the exact strings, so one random *style* (case pattern,
  digit substitutions, an appended digit suffix) is applied identically to both passwords; the
  map is injective on lowercase words, so matching pairs stay equal, others stay different.
- WordLength: the label depends on lengths, so only length-preserving edits (case changes and
  letter substitutions) are applied, independently to each word.
Every augmented example's label is recomputed from its new content and checked.

Caveat stated in the notebook: the PasswordMatch styles (mixed case, digits) overlap the
password OOD shift, so a gain there is expected, not evidence of generalisation; no
augmentation makes WordLength words longer than the training words, so the rare-long-word shift
is not covered by it.
"""

from __future__ import annotations

import random
import string
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch

from robnb.params import OODMethodParams, Params
from robnb.results.provenance import stable_hash
from robnb.tasks.base import Example
from robnb.tasks.procedural import password_match_example, word_length_example

METHOD_NAME = "perturbation_augmentation"
# never dropped or edited: losing one can flip a sentiment or entailment label
NEGATIONS = frozenset({"not", "no", "never", "nor", "none", "nothing", "nobody", "neither",
                       "nowhere", "cannot", "without"})
_LEET = str.maketrans({"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"})


# ---------------------------------------------------------------- perturbations

def change_case(word: str, rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return word.upper()
    if kind == 1:
        return word.lower()
    if kind == 2:
        return word[:1].upper() + word[1:].lower()
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in word)


def char_edit(word: str, rng: random.Random) -> str:
    """One edit of an interior character: swap with its neighbour, delete, insert or substitute."""
    if len(word) < 3:
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    letter = rng.choice(string.ascii_lowercase)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + letter + word[i:]
    return word[:i] + letter + word[i + 1:]


def perturb_text(text: str, rng: random.Random, s: OODMethodParams) -> str:
    """Per-word character edits, case changes and dropout; line breaks and ``Field:`` markers
    are kept."""
    lines = []
    for line in text.split("\n"):
        words = line.split(" ")
        n_words = sum(1 for w in words if w)
        out = []
        for w in words:
            bare = w.strip(string.punctuation).lower()
            if not w or w.endswith(":") or w == "---" or bare in NEGATIONS or \
                    bare.endswith(("n't", "n’t")):
                out.append(w)
                continue
            if n_words > 3 and rng.random() < s.word_dropout:
                continue
            if rng.random() < s.case_rate:
                w = change_case(w, rng)
            if rng.random() < s.char_rate:
                w = char_edit(w, rng)
            out.append(w)
        lines.append(" ".join(out))
    return "\n".join(lines)


def password_style(rng: random.Random) -> Callable[[str], str]:
    """One injective map on lowercase words, drawn at random, applied to both passwords."""
    kind = rng.randrange(4)
    if kind == 0:
        mask = [rng.random() < 0.5 for _ in range(64)]
        return lambda w: "".join(c.upper() if mask[i % 64] else c for i, c in enumerate(w))
    if kind == 1:
        return lambda w: w.translate(_LEET)
    if kind == 2:
        suffix = "".join(rng.choice(string.digits) for _ in range(rng.randint(1, 4)))
        return lambda w: w + suffix
    upper_first = rng.random() < 0.5
    suffix = str(rng.randint(0, 99))
    return lambda w: (w[:1].upper() + w[1:] if upper_first else w.upper()) + suffix


def same_length_edit(word: str, rng: random.Random, s: OODMethodParams) -> str:
    if rng.random() < 0.5:
        word = change_case(word, rng)
    chars = list(word)
    for i in range(len(chars)):
        if rng.random() < max(s.char_rate, 0.0):
            chars[i] = rng.choice(string.ascii_lowercase)
    return "".join(chars)


def augment_example(ex: Example, task: str, rng: random.Random, s: OODMethodParams) -> Example:
    """A perturbed copy of ``ex`` with the same label (checked)."""
    if task == "password_match":
        f = password_style(rng)
        new = password_match_example(f(ex.meta["system"]), f(ex.meta["user"]))
    elif task == "word_length":
        new = word_length_example(same_length_edit(ex.meta["first"], rng, s),
                                  same_length_edit(ex.meta["second"], rng, s))
    else:
        new = replace(ex, prefix=perturb_text(ex.prefix, rng, s) if ex.prefix else ex.prefix,
                      modifiable=perturb_text(ex.modifiable, rng, s))
    if new.label != ex.label:
        raise AssertionError(f"augmentation changed the label of a {task} example: {ex.text!r} "
                             f"-> {new.text!r}")
    return replace(new, meta={**new.meta, "augmented": True})


def augment(examples: Sequence[Example], task: str, s: OODMethodParams,
            seed: int = 0) -> list[Example]:
    """Replace ``s.fraction`` of the examples (each independently) by a perturbed copy."""
    rng = random.Random(stable_hash([s.seed, seed, task]))
    return [augment_example(e, task, rng, s) if rng.random() < s.fraction else e
            for e in examples]


# ---------------------------------------------------------------- the trained checkpoint

def ood_method_dir(params: Params, size: str, task: str, seed: int) -> Path:
    return params.run_dir / "ood_method" / size / task / f"seed{seed}"


def continuation_settings(params: Params, size: str) -> tuple[int, float]:
    """(training examples, learning rate) of ``start: fine_tuned``: as set, else adversarial
    training's for this size (rounds × max_train examples, its learning rate)."""
    from robnb.defenses.adversarial_training import rounds_for

    m, at = params.ood.method, params.adversarial_training
    n = m.n_train or rounds_for(params, size) * at.max_train
    return n, m.lr or at.lr


def ood_method_checkpoint(params: Params, size: str, task: str, seed: int,
                          device: torch.device | None = None, info: dict | None = None,
                          progress: bool = False) -> tuple[Path, dict, bool]:
    """The classifier trained with the OOD method (cached, verified); (folder, meta, reused).

    ``start: base``: the base model fine-tuned on augmented data, with the baseline's
    examples, hyperparameters and steps. ``start: fine_tuned``: the fine-tuned classifier
    trained one more epoch on ``n_train`` augmented training examples (see
    :class:`robnb.params.OODMethodParams`).
    """
    from robnb.checkpoints import cached, verify
    from robnb.evaluation import evaluate_examples
    from robnb.models.counting import classifier_params
    from robnb.models.registry import load_sequence_classifier
    from robnb.stages.common import model_info
    from robnb.stages.finetune import finetune_dir, finetune_key, require_finetuned
    from robnb.tasks import load_task
    from robnb.train import fits, train_epochs

    device = device or torch.device("cpu")
    info = info or model_info(params, size)
    fp, m = params.finetune, params.ood.method
    settings = m.model_dump()
    fkey = finetune_key(params, size, task, seed, info["base_key"])
    if m.start == "fine_tuned":  # this very fine-tuned model, intact, before any work
        require_finetuned(params, size, [task])
        verify(finetune_dir(params, size, task, seed), {"key": fkey})
        settings["n_train"], settings["lr"] = continuation_settings(params, size)
    key = stable_hash({"finetune": fkey, "method": METHOD_NAME, "settings": settings})

    def build(tmp: Path) -> dict:
        torch.manual_seed(seed)
        src = params.task_sources.get(task)
        pool = load_task(task, "train", fp.train_size(task), seed, src)
        if m.start == "fine_tuned":
            model, tok = load_sequence_classifier(str(finetune_dir(params, size, task, seed)),
                                                  device=device)
            pick = random.Random(stable_hash([m.seed, seed, task, "sample"]))
            pool = pick.sample(pool, min(settings["n_train"], len(pool)))
            tp = fp.model_copy(update={"lr": settings["lr"], "epochs": 1,
                                       "schedule": "constant", "warmup_steps": 0})
        else:
            model, tok = load_sequence_classifier(info["source"], revision=info["revision"],
                                                  device=device)
            tp = fp
        train = fits(augment(pool, task, m, seed), tok, fp.max_tokens)
        val = fits(load_task(task, "validation", fp.n_val, 0, src), tok, fp.max_tokens)
        if len(train) < min(tp.batch_size, len(pool)) or not train or not val:
            raise ValueError(f"finetune.max_tokens={fp.max_tokens} leaves {len(train)} training "
                             f"and {len(val)} validation examples of task '{task}'")
        t0 = time.time()
        state = train_epochs(model, tok, train, tp, seed, progress=progress,
                             desc=f"ood-method {size} {task} s{seed}")
        wall = time.time() - t0
        scores, _ = evaluate_examples(model, tok, val, device=device)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        return {"key": key, "method": METHOD_NAME, "size": size, "task": task, "seed": seed,
                "settings": settings, "classifier_params": classifier_params(model),
                "train_flops": state.flops, "steps": state.step, "n_train": len(train),
                "n_augmented": sum(bool(e.meta.get("augmented")) for e in train),
                "metrics": scores, "wall_s": wall}

    return cached(ood_method_dir(params, size, task, seed), build, {"key": key})
