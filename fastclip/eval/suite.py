"""Evaluation suites: one TOML file names the datasets (type, path, settings) and the benchmarks (the datasets each
evaluates, and its settings). `fastclip-eval RUN --suite paper|toyworld|FILE.toml`.

    [suite]
    name = "paper"                      # optional; default: the file's stem
    data_root = "/data"                 # optional; relative dataset paths resolve against it (itself relative to
                                        # this file). --data-root overrides it; built-in suites default to the
                                        # current directory
    [options]                           # optional defaults of fastclip-eval flags (a flag given wins)
    templates = "imagenet"              #   templates, batch_size, precision, seed, resamples, toyworld_size
    [datasets.tid2013]                  # one table per dataset; the table's name names the dataset in the results
    type = "tid2013"                    # a type of fastclip.eval.sources.DATASET_TYPES
    path = "tid2013"                    # folder or file, as the type expects
    [benchmarks.iqa]                    # one table per benchmark (a name of the registry)
    datasets = ["tid2013"]              # the datasets it evaluates (their kinds must suit it)
    distances = ["l2", "cosine"]        # the benchmark's own settings (see each benchmark's SETTINGS)

The file is read with tomllib (tomli before Python 3.11). Every key is checked here, so a typo fails before any
checkpoint is loaded, naming the file and the key.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from fastclip.eval.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

BUILTIN_SUITES = ("paper", "toyworld")
OPTION_KEYS = ("templates", "batch_size", "precision", "seed", "resamples", "toyworld_size")
_SUITE_KEYS = ("name", "description", "data_root")


class SuiteError(InputError):
    """A suite file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    type: str
    path: Path | None  # resolved; None for generated datasets (the toy world)
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    datasets: tuple[str, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    name: str
    source: str  # the file it was read from, or a description of a suite built in code
    datasets: Mapping[str, DatasetSpec]
    benchmarks: tuple[BenchmarkSpec, ...]
    options: Mapping[str, Any] = field(default_factory=dict)

    def benchmark(self, name: str) -> BenchmarkSpec | None:
        return next((spec for spec in self.benchmarks if spec.name == name), None)

    def only(self, benchmark_names: list[str]) -> "Suite":
        """The suite restricted to these benchmarks (in this order); each must be in the suite."""
        missing = [name for name in benchmark_names if self.benchmark(name) is None]
        if missing:
            raise SuiteError(
                f"{self.source}: --benchmarks names {missing}, which the suite does not run; it runs "
                f"{', '.join(spec.name for spec in self.benchmarks)}"
            )
        return replace(self, benchmarks=tuple(self.benchmark(name) for name in benchmark_names))

    def without_missing_paths(self) -> tuple["Suite", list[str]]:
        """(the suite without datasets whose path does not exist, the names left out) for --skip-missing."""
        absent = [name for name, spec in self.datasets.items() if spec.path is not None and not spec.path.exists()]
        if not absent:
            return self, []
        datasets = {name: spec for name, spec in self.datasets.items() if name not in absent}
        benchmarks = tuple(
            replace(spec, datasets=tuple(d for d in spec.datasets if d not in absent)) for spec in self.benchmarks
        )
        return replace(self, datasets=datasets, benchmarks=tuple(b for b in benchmarks if b.datasets)), absent


def builtin_suite_path(name: str) -> Path:
    return Path(str(resources.files("fastclip") / "suites" / f"{name}.toml"))


def resolve_suite_argument(text: str) -> tuple[Path, bool]:
    """`--suite paper` -> (the packaged paper.toml, True); `--suite FILE` -> (FILE, False)."""
    if text in BUILTIN_SUITES:
        return builtin_suite_path(text), True
    path = Path(text)
    if not path.is_file():
        raise SuiteError(
            f"--suite {text}: no such file; give a suite file (TOML) or a built-in suite: {', '.join(BUILTIN_SUITES)}"
        )
    return path, False


def _table(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise SuiteError(f"{where} must be a table, got {type(value).__name__}")
    return value


def _check_keys(table: Mapping, allowed, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise SuiteError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")


def _resolve(text, data_root: Path) -> Path:
    path = Path(str(text)).expanduser()
    return path if path.is_absolute() else data_root / path


def parse_suite(
    data: Mapping[str, Any], *, source: str, base_dir: Path, data_root: Path | None = None, default_name: str = "suite"
) -> Suite:
    """Build and check a Suite from parsed TOML. Relative paths resolve against data_root (when given), else the
    suite's data_root (relative to base_dir), else base_dir."""
    from fastclip.eval.registry import get_benchmark_class
    from fastclip.eval.sources import dataset_type, dataset_types

    _check_keys(data, ("suite", "options", "datasets", "benchmarks"), source)
    header = _table(data.get("suite", {}), f"{source}: [suite]")
    _check_keys(header, _SUITE_KEYS, f"{source}: [suite]")
    options = _table(data.get("options", {}), f"{source}: [options]")
    _check_keys(options, OPTION_KEYS, f"{source}: [options]")
    if data_root is None:
        data_root = base_dir / Path(header.get("data_root", "."))
    datasets: dict[str, DatasetSpec] = {}
    for name, raw in _table(data.get("datasets", {}), f"{source}: [datasets]").items():
        where = f"{source}: [datasets.{name}]"
        raw = dict(_table(raw, where))
        type_name = raw.pop("type", None)
        if type_name is None:
            raise SuiteError(f"{where}: missing key 'type'; choose from {', '.join(dataset_types())}")
        kind = dataset_type(str(type_name), where)
        path_text = raw.pop("path", None)
        if kind.needs_path and path_text is None:
            raise SuiteError(f"{where}: type {type_name!r} needs a 'path' ({kind.path_help})")
        if not kind.needs_path and path_text is not None:
            raise SuiteError(f"{where}: type {type_name!r} is generated and takes no 'path'")
        settings = kind.check_settings(raw, where)
        for key in kind.path_settings:
            if settings.get(key) is not None:
                settings[key] = _resolve(settings[key], data_root)
        path = None
        if path_text is not None:
            path = _resolve(path_text, data_root)
        datasets[name] = DatasetSpec(name, str(type_name), path, settings)
    benchmarks = []
    for name, raw in _table(data.get("benchmarks", {}), f"{source}: [benchmarks]").items():
        where = f"{source}: [benchmarks.{name}]"
        raw = dict(_table(raw, where))
        cls = get_benchmark_class(name, where)
        names = raw.pop("datasets", None)
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise SuiteError(f"{where}: 'datasets' must be a non-empty list of dataset names")
        for dataset in names:
            if dataset not in datasets:
                raise SuiteError(f"{where}: dataset {dataset!r} is not defined (defined: {', '.join(datasets)})")
            kind = dataset_type(datasets[dataset].type, where).kind
            if kind not in cls.kinds:
                raise SuiteError(
                    f"{where}: {cls.name} evaluates {'/'.join(cls.kinds)} datasets, but {dataset!r} is a {kind} "
                    f"dataset (type {datasets[dataset].type!r})"
                )
        benchmarks.append(BenchmarkSpec(name, tuple(dict.fromkeys(names)), cls.check_settings(raw, where)))
    if not benchmarks:
        raise SuiteError(f"{source}: the suite runs no benchmark; add a [benchmarks.NAME] table")
    return Suite(str(header.get("name", default_name)), source, datasets, tuple(benchmarks), dict(options))


def load_suite(text: str, *, data_root: Path | None = None) -> Suite:
    """Read `--suite` (a built-in name or a TOML file). Built-in suites resolve relative paths against data_root,
    else the current directory."""
    path, builtin = resolve_suite_argument(text)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{path}: not valid TOML ({exc})") from exc
    if builtin and data_root is None:
        data_root = Path.cwd()
    return parse_suite(data, source=str(path), base_dir=path.parent, data_root=data_root, default_name=path.stem)


def cue_conflict_specs(folders, existing: Mapping[str, DatasetSpec]) -> dict[str, DatasetSpec]:
    """--cue-conflict folders as cue_conflict datasets named by their folder; names must be unique."""
    from fastclip.eval.sources import dataset_type

    kind = dataset_type("cue_conflict", "--cue-conflict")
    named: dict[str, DatasetSpec] = {}
    for folder in folders:
        name = Path(folder).resolve().name
        if name in named or name in existing:
            used = named[name].path if name in named else f"the suite's dataset {name!r}"
            raise SuiteError(
                f"--cue-conflict {folder}: its name {name!r} is already used by {used}; results name a dataset by "
                "its folder, so rename one"
            )
        named[name] = DatasetSpec(name, "cue_conflict", Path(folder), kind.check_settings({}, "--cue-conflict"))
    return named


def with_cue_conflict(suite: Suite, folders) -> Suite:
    """The suite with --cue-conflict folders added as datasets of its shape_bias benchmark."""
    if not folders:
        return suite
    if suite.benchmark("shape_bias") is None:
        raise SuiteError("--cue-conflict feeds the shape_bias benchmark, which the suite (or --benchmarks) leaves out")
    added = cue_conflict_specs(folders, suite.datasets)
    benchmarks = tuple(
        replace(spec, datasets=spec.datasets + tuple(added)) if spec.name == "shape_bias" else spec
        for spec in suite.benchmarks
    )
    return replace(suite, datasets={**suite.datasets, **added}, benchmarks=benchmarks)


def default_suite() -> Suite:
    """fastclip-eval without --suite: zero-shot accuracy, shape bias and noise robustness on the toy world."""
    from fastclip.eval.registry import get_benchmark_class
    from fastclip.eval.sources import dataset_type

    datasets = {
        name: DatasetSpec(name, type_name, None, dataset_type(type_name, "default suite").check_settings({}, name))
        for name, type_name in (("toyworld_heldout", "toyworld"), ("toyworld_cue_conflict", "toyworld_cue_conflict"))
    }
    benchmarks = tuple(
        BenchmarkSpec(name, (dataset,), get_benchmark_class(name).check_settings({}, name))
        for name, dataset in (
            ("zeroshot", "toyworld_heldout"), ("shape_bias", "toyworld_cue_conflict"),
            ("noise_robustness", "toyworld_heldout"),
        )
    )  # fmt: skip
    return Suite("default", "the default suite (no --suite)", datasets, benchmarks)
