"""The arms of the paper's comparisons, each defined once: what `train` writes as a run's `arm`, what `compare`
groups and names, what a recipe may ask for.

An arm is a way of getting a trained model of a pruning level: the unpruned baseline, the classic pipeline's
fine-tuned model, the pruned architecture trained from scratch for the baseline's epochs (scratch-E) or its FLOPs
budget (scratch-B; Liu et al., ICLR 2019), and Frankle & Carbin's winning ticket with its random-init control.

>>> arm_named("FT").label, arm_for_stage("scratch-b").label
('fine-tuned', 'scratch-B')
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from prunectl.errors import BadValueError


@dataclass(frozen=True)
class Arm:
    """One arm.

    `label` is its canonical name (result.json `arm`, compare's groups and gates); `stage` the run stage whose
    runs belong to it; `aliases` other names users may type (case-insensitive, like the label). `control` is the
    arm a group of this arm is always compared with (None: the report's reference arm). `needs_reference`: when
    runs of this arm are present but the reference arm has none, compare says so. `recipe` is the kind of recipe
    that produces it ("prune", "lottery"; None: every recipe's baseline), and `derive` how its spec is made,
    the name `run_recipe` dispatches on: "baseline" (`baseline_spec`), "finetune" (`finetune_spec`), "scratch"
    (`scratch_spec` with `budget`), "lottery" (made by `lottery` per round).
    """

    label: str
    stage: str
    aliases: tuple[str, ...] = ()
    control: str | None = None
    needs_reference: bool = True
    recipe: str | None = "prune"
    derive: str = "finetune"
    budget: str | None = None  # scratch arms: "E" or "B"
    description: str = ""

    def names(self) -> tuple[str, ...]:
        """Every name that means this arm, lower-cased: the label and its aliases."""
        return (self.label.lower(), *(a.lower() for a in self.aliases))


ARMS: tuple[Arm, ...] = (
    Arm("baseline", "train", ("train",), needs_reference=False, recipe=None, derive="baseline",
        description="the unpruned model, trained with the dataset's protocol"),
    Arm("fine-tuned", "finetune", ("finetune", "finetuned", "ft"), derive="finetune",
        description="the pruned model with its inherited weights, fine-tuned at a small constant lr"),
    Arm("scratch-E", "scratch-e", derive="scratch", budget="E",
        description="the pruned architecture from a random init, the baseline's epochs"),
    Arm("scratch-B", "scratch-b", derive="scratch", budget="B",
        description="the pruned architecture from a random init, the baseline's FLOPs budget"),
    Arm("winning-ticket", "ticket", ("ticket",), control="random-init", needs_reference=False, recipe="lottery",
        derive="lottery", description="the lottery mask, survivors rewound to the baseline's init, retrained"),
    Arm("random-init", "random-init", ("random",), needs_reference=False, recipe="lottery", derive="lottery",
        description="the lottery mask trained from a fresh random init (the winning ticket's control)"),
)
LABELS: tuple[str, ...] = tuple(a.label for a in ARMS)
_BY_LABEL = {a.label: a for a in ARMS}
_BY_STAGE = {a.stage: a for a in ARMS}
_BY_NAME = {name: a for a in ARMS for name in a.names()}
assert len(_BY_NAME) == sum(len(a.names()) for a in ARMS), "arm names and aliases are unique"


def arm(label: str) -> Arm:
    """The arm with this canonical label (a programming error if there is none)."""
    return _BY_LABEL[label]


def arm_named(text: str) -> Arm:
    """The arm for a label or alias, case-insensitively: 'ft' → fine-tuned; an unknown name gets a did-you-mean."""
    key = text.strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    close = difflib.get_close_matches(key, list(_BY_NAME), n=1, cutoff=0.6)
    hint = f"; did you mean '{_BY_NAME[close[0]].label}'?" if close else ""
    raise BadValueError(f"unknown arm '{text}'{hint} (valid: {', '.join(LABELS)})")


def arm_for_stage(stage: str) -> Arm | None:
    """The arm whose runs have this stage (None for stages that are no arm, e.g. prune)."""
    return _BY_STAGE.get(stage)


def recipe_arms(kind: str) -> tuple[Arm, ...]:
    """The arms a recipe of this kind ("prune" or "lottery") runs, in report order."""
    return tuple(a for a in ARMS if a.recipe == kind)


def position(label: str) -> int:
    """Where an arm comes in tables and in compare's JSON (the order of `ARMS`)."""
    return LABELS.index(label)
