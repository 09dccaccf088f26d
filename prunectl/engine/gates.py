"""CI gates on a comparison: 'scratch-B >= fine-tuned - 0.5' parsed, then judged at every level of a report."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prunectl.engine import arms as arm_registry
from prunectl.errors import BadValueError

if TYPE_CHECKING:
    from prunectl.engine.compare import CompareReport

GATE_FORM = ("expected 'ARM OP ARM ± POINTS' or 'ARM OP NUMBER' with OP one of >=, >, <=, <, "
             "e.g. 'scratch-B >= fine-tuned - 0.5' or 'scratch-B >= 95'")
_OPS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, ">": operator.gt, "<=": operator.le,
                                                   "<": operator.lt}
_GATE = re.compile(r"^\s*(?P<arm>[A-Za-z][A-Za-z-]*)\s*(?P<op>>=|<=|>|<)\s*(?P<right>.*?)\s*$")
_NUM = r"(?:\d+\.?\d*|\.\d+)"
_RIGHT_NUMBER = re.compile(rf"^(?P<num>[+-]?{_NUM})\s*%?$")
_RIGHT_ARM = re.compile(rf"^(?P<arm>[A-Za-z][A-Za-z-]*?)\s*(?:(?P<sign>[+-])\s*(?P<num>{_NUM})\s*%?)?$")

def arm_name(text: str) -> str:
    """The canonical arm for a name or alias, case-insensitively: 'ft' → 'fine-tuned', 'SCRATCH-b' → 'scratch-B'."""
    return arm_registry.arm_named(text).label


@dataclass(frozen=True)
class Gate:
    """`arm op right_arm + offset`, or `arm op offset` when right_arm is None; accuracies in % points."""

    text: str
    arm: str
    op: str
    right_arm: str | None
    offset: float

    def arms(self) -> list[str]:
        return [self.arm] + ([self.right_arm] if self.right_arm else [])


@dataclass(frozen=True)
class GateResult:
    """One gate at one level: group means compared (left: the gate's arm; right: the other side's value)."""

    gate: str
    passed: bool
    left: float
    right: float
    level: Any

    def to_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "left": self.left, "right": self.right,
                "level": self.level}


def parse_gate(text: str) -> Gate:
    """'scratch-B >= fine-tuned - 0.5' → Gate('scratch-B', '>=', 'fine-tuned', -0.5); 'ft > 93' → a plain number."""
    match = _GATE.match(text.replace("≥", ">=").replace("≤", "<=").replace("−", "-"))
    number = _RIGHT_NUMBER.match(match["right"]) if match else None
    right = _RIGHT_ARM.match(match["right"]) if match else None
    if match is None or (number is None and right is None):
        raise BadValueError(f"malformed gate '{text}': {GATE_FORM}")
    try:
        arm = arm_name(match["arm"])
        if right is None:
            return Gate(text, arm, match["op"], None, float(number["num"]) if number else 0.0)
        offset = float(right["num"] or 0.0) * (-1.0 if right["sign"] == "-" else 1.0)
        return Gate(text, arm, match["op"], arm_name(right["arm"]), offset)
    except BadValueError as err:
        raise BadValueError(f"gate '{text}': {err}") from None


def evaluate_gates(report: CompareReport, gates: Sequence[Gate | str]) -> list[GateResult]:
    """Each gate at every level where its arms exist (means compared, to 1e-9 points); it holds if all pass.

    Shared runs without a level are judged once, at their own level, not again at every level they stand in for.
    """
    results: list[GateResult] = []
    present = report.arms()
    for item in gates:
        gate = item if isinstance(item, Gate) else parse_gate(item)
        for arm in gate.arms():
            if arm not in present:
                raise BadValueError(f"gate '{gate.text}' names {arm}, which has no runs "
                                    f"(arms with runs: {', '.join(present)})")
        found = [r for level in report.levels() if (r := _judge(report, gate, level)) is not None]
        if not found:
            raise BadValueError(f"gate '{gate.text}' compares nothing: {' and '.join(gate.arms())} never "
                                "appear at the same level")
        results.extend(found)
    return results


def _judge(report: CompareReport, gate: Gate, level: Any) -> GateResult | None:
    left = report.group(level, gate.arm)
    right = report.group(level, gate.right_arm) if gate.right_arm else None
    if left is None or (gate.right_arm and right is None):
        return None
    if level is not None and left.level is None and (right is None or right.level is None):
        return None
    value = (right.acc_mean if right else 0.0) + gate.offset
    passed = _OPS[gate.op](round(left.acc_mean - value, 9), 0.0)
    return GateResult(gate.text, passed, left.acc_mean, value, level)
