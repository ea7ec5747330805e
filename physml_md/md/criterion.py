"""``Criterion``: one pass/fail judgement of the MD validation suite (``physml_md.md.validation``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

__all__ = ["Criterion"]


@dataclass
class Criterion:
    """One pass/fail judgement: ``value`` against ``threshold`` (pass when value <= threshold, or >= for "min")."""

    name: str
    value: float | None
    threshold: float
    passed: bool
    unit: str = ""
    relation: str = "<="
    detail: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "threshold": self.threshold,
            "relation": self.relation,
            "unit": self.unit,
            "passed": self.passed,
            "detail": self.detail,
        }

    @property
    def message(self) -> str:
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        verdict = "pass" if self.passed else "FAIL"
        text = f"{verdict}  {self.name}: {value} {self.unit} (pass when {self.relation} {self.threshold:g})"
        return text + (f" - {self.detail}" if self.detail else "")
