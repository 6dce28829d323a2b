"""Human observers' raw data of model-vs-human / texture-vs-shape, turned into the human reference of a benchmark.

    DIR/                                         model-vs-human raw-data/cue-conflict/
      cue-conflict_subject-01_session_1.csv      <dataset>_subject-<NN>_session_<S>.csv, one per observer and
      ...                                        session, with the header
      cue-conflict_subject-10_session_1.csv      subj,session,trial,rt,object_response,category,condition,imagename

texture-vs-shape names the same files `style-transfer-512-nomask-experiment_subject-01_session_1.csv`; model files
in the same folder (`cue-conflict_resnet50_session-1.csv`) are not observers and are skipped. The human shape bias
is computed from these rows by `shape_bias_from_trials`, the very function that scores the models' trials CSVs, so
human and model numbers cannot drift apart by a difference in the rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fastclip.eval.benchmarks.shape_bias import ShapeBiasReport, shape_bias_from_trials
from fastclip.eval.datasets.layout import Layout, quote_some
from fastclip.eval.results import ResultsFileError, TRIALS_COLUMNS, read_trials_csv

SUBJECT_FILENAME = re.compile(r"^(?P<dataset>.+)_(?P<subject>subject-\d+)_session[_-](?P<session>\d+)\.csv$")

LAYOUT = Layout(
    "model-vs-human raw-data",
    "bethgelab/model-vs-human raw-data/<dataset>/, rgeirhos/texture-vs-shape raw-data/<experiment>/",
    f"""\
  DIR/                                          e.g. raw-data/cue-conflict
    cue-conflict_subject-01_session_1.csv       <dataset>_subject-<NN>_session_<S>.csv, one per observer (and session)
    cue-conflict_subject-02_session_1.csv
    ...
  each with the header {','.join(TRIALS_COLUMNS)}
  (model files such as cue-conflict_resnet50_session-1.csv may lie beside them; they are skipped)""",
)


@dataclass(frozen=True)
class HumanRawFile:
    path: Path
    dataset: str  # e.g. "cue-conflict"
    subject: str  # e.g. "subject-01"
    session: int


@dataclass(frozen=True)
class HumanShapeBias:
    """The human reference on cue-conflict stimuli: all observers' trials pooled, and each observer alone."""

    pooled: ShapeBiasReport
    per_subject: dict[str, ShapeBiasReport]  # subject -> that observer's sessions, pooled
    files: tuple[HumanRawFile, ...]

    @property
    def subject_shape_biases(self) -> dict[str, float]:
        return {subject: report.pooled.shape_bias for subject, report in self.per_subject.items()}


def scan_human_raw_data(folder: str | Path, dataset: str | None = None) -> list[HumanRawFile]:
    """The observers' CSVs in `folder`, sorted by (subject, session); all must belong to one dataset.

    `dataset` picks one when the folder holds several (texture-vs-shape's flat raw-data folders do not, but a user
    may gather them); without it, more than one is an error naming them.
    """
    folder = LAYOUT.require_dir(folder)
    files = []
    for path in sorted(folder.iterdir()):
        match = SUBJECT_FILENAME.match(path.name)
        if match and path.is_file():
            files.append(HumanRawFile(path, match["dataset"], match["subject"], int(match["session"])))
    if dataset is not None:
        files = [entry for entry in files if entry.dataset == dataset]
    if not files:
        others = [path.name for path in folder.iterdir() if path.suffix.lower() == ".csv"]
        hint = f" (the CSVs found are not observers': {quote_some(sorted(others))})" if others else ""
        wanted = f" of the dataset {dataset!r}" if dataset is not None else ""
        raise LAYOUT.error(folder, f"no observer CSVs{wanted} named <dataset>_subject-<NN>_session_<S>.csv{hint}")
    datasets = sorted({entry.dataset for entry in files})
    if len(datasets) > 1:
        raise LAYOUT.error(folder, f"observer CSVs of several datasets {datasets}; pass dataset= to choose one")
    return sorted(files, key=lambda entry: (entry.subject, entry.session))


def _read(entry: HumanRawFile) -> list[dict]:
    try:
        rows = read_trials_csv(entry.path)
    except ResultsFileError as exc:
        raise LAYOUT.error(entry.path, str(exc).split(": ", 1)[-1]) from exc
    if not rows:
        raise LAYOUT.error(entry.path, "no trials in this file")
    return rows


def human_shape_bias(folder: str | Path, dataset: str | None = None) -> HumanShapeBias:
    """Shape bias of the human observers of a cue-conflict raw-data folder, pooled over observers and per observer."""
    files = scan_human_raw_data(folder, dataset)
    by_subject: dict[str, list[dict]] = {}
    for entry in files:
        by_subject.setdefault(entry.subject, []).extend(_read(entry))
    return HumanShapeBias(
        pooled=shape_bias_from_trials(row for rows in by_subject.values() for row in rows),
        per_subject={subject: shape_bias_from_trials(rows) for subject, rows in by_subject.items()},
        files=tuple(files),
    )
