"""Benchmarks registered by name.

A benchmark is a class with a `name`, the `headline` (metric, variant) pairs the summary, figure and report show,
the dataset `kinds` it evaluates (evalsets.KINDS), its `SETTINGS` (what a suite's [benchmarks.NAME] table may set,
with defaults and checks) and `run(context, dataset)` -> `BenchmarkOutput`. The runner instantiates each benchmark
of the suite with the suite's settings and calls `run` once per (checkpoint, dataset) that the results table lacks.
New benchmarks register with the `@register` decorator and add their module to `BUILTIN_MODULES`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

from fastclip.eval.errors import InputError
from fastclip.eval.results import Measurement

if TYPE_CHECKING:
    from fastclip.eval.context import CheckpointContext, EvalOptions
    from fastclip.eval.items import ItemValues

BUILTIN_MODULES = (
    "fastclip.eval.benchmarks.zeroshot",
    "fastclip.eval.benchmarks.shape_bias",
    "fastclip.eval.benchmarks.noise_robustness",
    "fastclip.eval.benchmarks.iqa",
    "fastclip.eval.benchmarks.two_afc",
    "fastclip.eval.benchmarks.saliency",
)
DEFAULT_BENCHMARKS = ("zeroshot", "shape_bias", "noise_robustness")


@dataclass(frozen=True)
class Setting:
    """One key of a benchmark's suite table: its default and a check that returns the value to use or raises
    ValueError saying what is allowed."""

    default: Any
    check: Callable[[Any], Any]
    help: str = ""


def one_of(*choices: str) -> Callable[[Any], str]:
    def check(value):
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return check


def subset_of(*choices: str) -> Callable[[Any], tuple[str, ...]]:
    def check(value):
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list | tuple) or not values or any(v not in choices for v in values):
            raise ValueError(f"must be a non-empty list drawn from {', '.join(map(repr, choices))}, got {value!r}")
        return tuple(dict.fromkeys(values))

    return check


def checked_settings(
    settings: Mapping[str, Setting], raw: Mapping[str, Any], where: str, owner: str, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The checked values of the keys a suite table sets (no defaults added). SuiteError, prefixed with `where`,
    for a key `settings` lacks (naming `owner` and the allowed keys), a missing `required` key or a bad value."""
    from fastclip.eval.suite import SuiteError

    unknown = sorted(set(raw) - set(settings))
    if unknown:
        allowed = ", ".join(sorted(settings)) or "none"
        raise SuiteError(f"{where}: unknown setting(s) {unknown} for {owner}; allowed: {allowed}")
    missing = [key for key in required if key not in raw]
    if missing:
        raise SuiteError(f"{where}: {owner} needs {', '.join(missing)}")
    checked = {}
    for key, value in raw.items():
        try:
            checked[key] = settings[key].check(value)
        except ValueError as exc:
            raise SuiteError(f"{where}: {key} {exc}") from exc
    return checked


def positive_int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return value


def text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {value!r}")
    return value


@dataclass
class BenchmarkOutput:
    measurements: list[Measurement]
    # Per-image decisions in the trials schema (results.TRIALS_COLUMNS, subj left to the runner), or None; a
    # benchmark with several decision protocols returns {subject suffix: trials}.
    trials: list[dict] | dict[str, list[dict]] | None = field(default=None)
    # Per-item values (per pair, triplet or image) that `fastclip-eval report` resamples for its paired tests.
    items: "ItemValues | None" = field(default=None)


class Benchmark(ABC):
    name: ClassVar[str]
    headline: ClassVar[tuple[tuple[str, str], ...]]
    kinds: ClassVar[tuple[str, ...]]
    SETTINGS: ClassVar[Mapping[str, Setting]] = {}

    def __init__(self, settings: Mapping[str, Any] | None = None):
        self.settings = {key: setting.default for key, setting in self.SETTINGS.items()}
        self.settings.update(settings or {})

    @classmethod
    def check_settings(cls, raw: Mapping[str, Any], where: str) -> dict[str, Any]:
        return checked_settings(cls.SETTINGS, raw, where, cls.name)

    def datasets(self, options: "EvalOptions") -> list[str]:
        """The dataset names this benchmark evaluates in the run's suite."""
        spec = options.suite.benchmark(self.name) if options.suite is not None else None
        return list(spec.datasets) if spec is not None else []

    @abstractmethod
    def run(self, context: "CheckpointContext", dataset: str) -> BenchmarkOutput:
        """Evaluate one checkpoint (context) on one dataset."""


_REGISTRY: dict[str, type[Benchmark]] = {}


def register(cls: type[Benchmark]) -> type[Benchmark]:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"benchmark {cls.name!r} is registered twice ({_REGISTRY[cls.name]} and {cls})")
    _REGISTRY[cls.name] = cls
    return cls


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(module)


def registered_names() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_benchmark_class(name: str, where: str = "") -> type[Benchmark]:
    _load_builtins()
    if name not in _REGISTRY:
        prefix = f"{where}: " if where else ""
        raise InputError(f"{prefix}unknown benchmark {name!r}; choose from {', '.join(registered_names())}")
    return _REGISTRY[name]


def get_benchmark(name: str, settings: Mapping[str, Any] | None = None) -> Benchmark:
    return get_benchmark_class(name)(settings)


def parse_benchmark_list(text: str) -> list[str]:
    """`--benchmarks a,b` -> ['a', 'b'] (order kept, duplicates dropped), each checked against the registry."""
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise InputError(f"--benchmarks names no benchmark; choose from {', '.join(registered_names())}")
    for name in names:
        get_benchmark_class(name)
    return names
