"""The bad-input corpus of tests/data/bad/ (README.md there lists every case and its outcome): each case is either
trained with an exact skip count by reason, or refused with a one-line message that names the file and the fix;
never a traceback, a wrong count, or a picture that differs between the torch and DALI backends."""

from __future__ import annotations

import json
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from fastclip.data.dali import dali_import_error
from fastclip.data.skips import NoReadableSamplesError
from fastclip.data.sources import open_webdataset
from fastclip.data.streaming import StreamingTrainData
from fastclip.data.webdataset import decode_rgb
from tests.data.bad import make_corpus

CORPUS = Path(__file__).resolve().parent / "data" / "bad"
SHARDS = CORPUS / "shards"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
BACKENDS = ["torch", pytest.param("dali", marks=pytest.mark.skipif(dali_import_error() is not None,
                                                                   reason=f"{dali_import_error()}"))]


@pytest.fixture(scope="module")
def tokenizer():
    from fastclip.models import register_fastclip_configs

    register_fastclip_configs()
    import open_clip

    return open_clip.get_tokenizer("fc-tiny-vit")


def corpus_files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")
            if path.is_file() and path.name not in ("README.md", "make_corpus.py", "__init__.py")
            and "__pycache__" not in path.parts}


def test_the_generator_writes_exactly_the_committed_corpus(tmp_path):
    make_corpus.write_corpus(tmp_path)
    assert corpus_files(tmp_path) == corpus_files(CORPUS)
    for name in corpus_files(CORPUS):
        if name.endswith((".csv", ".toml", ".jsonl", ".json", ".txt")):
            assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name


def test_the_readme_gives_every_case_one_line():
    readme = (CORPUS / "README.md").read_text()
    cases = {str(path.relative_to(CORPUS)) for path in (CORPUS / "shards").iterdir()}
    cases |= {name for name in corpus_files(CORPUS) if not name.startswith(("shards/", "folders/"))}
    cases |= {str(path.relative_to(CORPUS)) for path in (CORPUS / "folders").iterdir()}
    for case in sorted(cases):
        lines = [line for line in readme.splitlines() if f"`{case}`" in line]
        assert len(lines) == 1, f"{case}: {len(lines)} lines of tests/data/bad/README.md name it"


def read_epoch(folder: Path, tokenizer, backend: str, *, world_size: int = 1, batch_size: int = 8, train=True):
    """(real keys, batches, StreamingTrainData) of epoch 0 of every rank, read in this process."""
    source = open_webdataset(str(folder))
    keys, batches, ranks = [], [], []
    for rank in range(world_size):
        data = StreamingTrainData(source, tokenizer=tokenizer, image_size=24, image_mean=MEAN, image_std=STD,
                                  batch_size=batch_size, backend=backend, world_size=world_size, rank=rank,
                                  train=train)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rank_batches = list(data.batches(0))
        assert len(rank_batches) == data.num_batches
        for batch in rank_batches:
            assert batch.images.shape == (batch_size, 3, 24, 24) and torch.isfinite(batch.images).all()
            assert len(set(batch.keys)) >= 2  # never one sample repeated
            keys.extend(batch.keys[: batch_size - batch.num_pads])
        batches.extend(rank_batches)
        ranks.append(data)
    return keys, batches, ranks


def total_skips(ranks) -> Counter:
    return sum((Counter(data.skip_counts) for data in ranks), Counter())


def member(key: str) -> str:
    return key.rsplit(":", 1)[-1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world_size", [1, 2])
def test_truncated_tar_counts_each_lost_sample_once(tokenizer, backend, world_size, caplog):
    keys, _, ranks = read_epoch(SHARDS / "truncated", tokenizer, backend, world_size=world_size)
    lost = make_corpus.TRUNCATED_SAMPLES - make_corpus.TRUNCATED_KEPT
    assert total_skips(ranks) == {"unreadable_tar": lost}
    assert len(keys) == len(set(keys)) == 10 + make_corpus.TRUNCATED_KEPT
    assert sum(data.unread for data in ranks) == 0  # the budget is the whole data set: nothing is left unread
    assert caplog.text.count("00001.tar is damaged") <= world_size  # once per rank that met it, not per stream


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_byte_tar_counts_the_samples_its_stats_claim(tokenizer, backend):
    keys, _, ranks = read_epoch(SHARDS / "zero_byte", tokenizer, backend)
    assert total_skips(ranks) == {"unreadable_tar": make_corpus.ZERO_BYTE_CLAIMED}
    assert len(set(keys)) == 10 and all("/00000.tar:" in key for key in keys)


@pytest.mark.parametrize("backend", BACKENDS)
def test_directory_entries_are_ignored(tokenizer, backend):
    keys, _, ranks = read_epoch(SHARDS / "directory_entry", tokenizer, backend, batch_size=4)
    assert total_skips(ranks) == {}
    assert sorted(member(key) for key in keys) == [f"part/{make_corpus.key(0, i)}.jpg" for i in range(5)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_duplicate_keys_in_a_row_are_skipped_apart_are_two_samples(tokenizer, backend):
    keys, _, ranks = read_epoch(SHARDS / "duplicate_keys", tokenizer, backend, batch_size=4)
    assert total_skips(ranks) == {"duplicate_key": 1}
    assert sorted(member(key) for key in keys) == sorted(f"{make_corpus.key(0, i)}.jpg" for i in (0, 2, 2, 3))
    assert len(set(keys)) == 4  # the two samples of key 2 are told apart by their offset in the tar


@pytest.mark.parametrize("backend", BACKENDS)
def test_incomplete_samples_are_counted_members_without_key_are_not_samples(tokenizer, backend):
    keys, _, ranks = read_epoch(SHARDS / "incomplete_samples", tokenizer, backend, batch_size=2)
    assert total_skips(ranks) == {"missing_image": 1, "missing_caption": 1}
    assert sorted(member(key) for key in keys) == [f"{make_corpus.key(0, 0)}.jpg", f"{make_corpus.key(0, 4)}.jpg"]


def test_captions_non_utf8_huge_and_cut_are_kept(tokenizer):
    from fastclip.data.webdataset import iter_tar_samples

    samples = list(iter_tar_samples(str(SHARDS / "captions" / "00000.tar"), expected=4))
    captions = [sample.caption for sample in samples]
    assert len(captions) == 4
    assert captions[1] == "caf\ufffd cr\ufffdme"  # Latin-1 bytes: undecodable bytes become U+FFFD
    assert len(captions[2]) == 50_000
    assert captions[3] == "na\u00efve \u65e5\ufffd"  # a UTF-8 character cut in half
    keys, batches, ranks = read_epoch(SHARDS / "captions", tokenizer, "torch", batch_size=4)
    assert total_skips(ranks) == {} and len(keys) == 4
    huge = next(b.texts[i] for b in batches for i, k in enumerate(b.keys) if member(k) == f"{make_corpus.key(0, 2)}.jpg")
    assert huge[-1] == tokenizer.eot_token_id  # truncated at the context length, still closed


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_image_format_trains(tokenizer, backend):
    keys, _, ranks = read_epoch(SHARDS / "formats", tokenizer, backend, batch_size=7)
    assert total_skips(ranks) == {} and len(set(keys)) == len(make_corpus.image_formats())


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_without_captions_are_refused_with_the_counts_and_the_fix(tokenizer, backend):
    with pytest.raises(NoReadableSamplesError) as failure:
        read_epoch(SHARDS / "no_captions", tokenizer, backend, batch_size=4)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith("data rank 0 epoch 1 read no usable sample of its 12; skipped 12 (missing_caption 12)")
    assert "--caption_col" in message


def dali_decode(data: bytes) -> np.ndarray:
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
    def decode():
        return fn.decoders.image(fn.external_source(name="encoded", dtype=types.UINT8), device="cpu",
                                 output_type=types.RGB)

    pipe = decode()
    pipe.build()
    pipe.feed_input("encoded", [np.frombuffer(data, dtype=np.uint8)])
    (output,) = pipe.run()
    return np.array(output.as_tensor())[0]


# Largest pixel difference between the two decoders: libjpeg-turbo, libpng and libwebp on both sides give the
# same pixels, except 16-bit RGB PNGs, which PIL reduces to 8 bits as v >> 8 and DALI as round(v / 257).
PARITY_TOLERANCE = {"png_16bit_rgb.png": 1}


@pytest.mark.skipif(dali_import_error() is not None, reason=f"{dali_import_error()}")
@pytest.mark.parametrize("name", sorted(make_corpus.image_formats()))
def test_decode_parity_between_torch_and_dali(name):
    data = (CORPUS / "images" / name).read_bytes()
    ours, dali = np.asarray(decode_rgb(data)).astype(int), dali_decode(data).astype(int)
    assert ours.shape == dali.shape
    assert np.abs(ours - dali).max() <= PARITY_TOLERANCE.get(name, 0)


def test_sixteen_bit_grey_is_scaled_not_clipped_and_exif_is_applied():
    grey = np.asarray(decode_rgb((CORPUS / "images" / "png_16bit_gray.png").read_bytes())).astype(float)
    expected = np.rint(make_corpus.ramp16() / 257.0)
    assert np.array_equal(grey[..., 0], expected) and abs(grey.mean() - 127.5) < 1  # PIL alone: nearly all 255
    rotated = decode_rgb((CORPUS / "images" / "jpeg_exif_rotated.jpg").read_bytes())
    assert rotated.size == (24, 48)  # stored 48x24 with orientation 6: shown upright as 24 wide, 48 high


@pytest.mark.parametrize("name", sorted(make_corpus.image_formats()))
def test_evaluation_decodes_every_format_as_training_does(name):
    """fastclip-eval's image datasets (stimuli, photographs, maps) see the picture training sees: EXIF applied,
    16-bit scaled (decode_image at its native size against the training decoder)."""
    from fastclip.eval.datasets.images import decode_image

    path = CORPUS / "images" / name
    evaluated = decode_image(path).permute(1, 2, 0).numpy()
    assert np.array_equal(evaluated, np.asarray(decode_rgb(path.read_bytes())))


@pytest.mark.skipif(dali_import_error() is not None, reason=f"{dali_import_error()}")
def test_both_backends_give_the_same_training_pictures_for_every_format(tokenizer):
    """The eval transform (no random crop) through both pipelines: the same images up to the resampling filters."""
    pictures = {}
    for backend in ("torch", "dali"):
        _, batches, _ = read_epoch(SHARDS / "formats", tokenizer, backend, batch_size=7, train=False)
        pictures[backend] = {member(k): b.images[i] for b in batches for i, k in enumerate(b.keys)}
    assert pictures["torch"].keys() == pictures["dali"].keys()
    for name, image in pictures["torch"].items():
        difference = (image - pictures["dali"][name]).abs()
        assert difference.mean() < 0.05, name  # normalised units (1/255 of a pixel is ~0.015)


@pytest.mark.parametrize("name", ["bom", "crlf", "quoted_tabs"])
def test_csv_variants_read_as_the_plain_file(name):
    from fastclip.data.csv_dataset import read_csv_table

    table = read_csv_table(CORPUS / "csv" / f"{name}.csv")
    suffix = "\twith a tab" if name == "quoted_tabs" else ""
    assert table.captions == [caption + suffix for caption in
                              ("a baseline jpeg", "an 8-bit png", "a webp picture", "a cmyk jpeg")]
    assert all(Path(path).is_file() for path in table.image_paths)  # no BOM or \r left in a name


def test_csv_with_bom_and_crlf_trains_without_skips():
    from fastclip.data.csv_dataset import CsvTrainData
    from fastclip.models import create_model
    from fastclip.train.config import parse_args

    bundle = create_model("fc-tiny-vit")
    for name in ("bom", "crlf"):
        args = parse_args(["--dataset-type", "csv", "--train-data", str(CORPUS / "csv" / f"{name}.csv"),
                           "--workers", "0", "--batch-size", "4"])
        data = CsvTrainData(args, bundle, device="cpu", rank=0, world_size=1)
        batches = list(data.batches(0))
        assert len(batches) == 1 and batches[0].images.shape[0] == 4 and data.skipped == 0


def refusal(argv: list[str], logs: Path) -> str:
    """fastclip-train's message for a refused start: one line, no traceback, nothing written for the run."""
    from fastclip.train.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--logs", str(logs), "--name", "refused", "--batch-size", "4", "--train-num-samples", "8",
              "--workers", "0"])
    message = str(exit_info.value.code)
    assert message.startswith("fastclip-train: error: ") and "\n" not in message
    assert not (logs / "refused").exists()
    return message


@pytest.mark.parametrize(("name", "expected"), [
    ("missing_column", r"missing_column\.csv: no column 'title' .*the columns found are \['filepath', 'caption'\]"),
    ("empty", r"empty\.csv: the file is empty \(expected open_clip's CSV layout"),
])
def test_bad_csv_is_refused_naming_the_file_and_the_columns(tmp_path, name, expected):
    import re

    message = refusal(["--dataset-type", "csv", "--train-data", str(CORPUS / "csv" / f"{name}.csv")], tmp_path)
    assert re.search(expected, message), message


@pytest.mark.parametrize(("name", "expected"), [
    ("truncated", "truncated.pt: not a readable PyTorch checkpoint"),
    ("other_model", "other_model.pt: holds a 'ViT-B-32' model, but --model is 'fc-tiny-vit'"),
    ("foreign_state_dict", "foreign_state_dict.pt"),
])
def test_bad_checkpoint_is_refused_naming_the_file(tmp_path, name, expected):
    message = refusal(["--resume", str(CORPUS / "checkpoints" / f"{name}.pt")], tmp_path)
    assert expected in message


@pytest.mark.parametrize(("name", "expected"), [
    ("flat_images", "flat_images: has no class subfolders (expected <root>/<class>/<image> files)"),
    ("classes_without_images", "classes_without_images: its 2 class folder(s) hold no images"),
])
def test_image_folder_in_a_wrong_layout_is_refused_with_the_layout_expected(tmp_path, name, expected):
    message = refusal(["--dataset-type", "folder", "--train-data", str(CORPUS / "folders" / name)], tmp_path)
    assert expected in message


def test_results_file_cut_mid_line_drops_the_cut_unit_with_a_warning():
    from fastclip.eval.results import ResultsTable, TruncatedResultsWarning

    folder = CORPUS / "results" / "truncated_mid_line"
    # An interrupted write: the cut-off line 3 and the unit of the row before it are dropped (measured again by the
    # next fastclip-eval), never half a unit that looks done; the other complete rows are kept.
    with pytest.warns(TruncatedResultsWarning, match=r"results\.jsonl: line 3 is cut off") as caught:
        table = ResultsTable.load(folder)
    assert len(caught) == 1 and "\n" not in str(caught[0].message)
    assert [row["epoch"] for row in table.rows] == [1]


def test_results_file_with_a_bad_line_inside_is_refused_naming_the_file_and_line(tmp_path):
    from fastclip.eval.errors import InputError
    from fastclip.eval.results import ResultsTable

    lines = (CORPUS / "results" / "truncated_mid_line" / "results.jsonl").read_text().splitlines()
    (tmp_path / "results.jsonl").write_text("\n".join([lines[0], lines[2], lines[1]]) + "\n")  # cut line inside
    with pytest.raises(InputError, match=r"results\.jsonl, line 2: not JSON .*; fix or delete the file") as failure:
        ResultsTable.load(tmp_path)
    assert "\n" not in str(failure.value)  # fastclip-eval prints InputErrors as one line, exit status 2


def test_suite_with_an_unknown_key_is_refused_naming_the_file_and_the_key(tmp_path, capsys):
    from fastclip.eval.cli import main

    suite = CORPUS / "suites" / "unknown_keys.toml"
    assert main([str(tmp_path), "--suite", str(suite), "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"fastclip-eval: error: {suite}: [benchmarks.zeroshot]: unknown setting(s) ['resampels']")
    assert "\n" not in error


@pytest.mark.slow
def test_captionless_shards_exit_with_the_counts_and_the_name_then_works(tmp_path):
    """The issue's first case end to end: a one-line refusal with the counts; the same --name then trains, with
    and without --resume latest, and a truncated tar's losses show in metrics.jsonl and out.log."""
    from fastclip.train.cli import main

    logs = tmp_path / "logs"
    common = ["--dataset-type", "webdataset", "--data-backend", "torch", "--batch-size", "8", "--epochs", "1",
              "--workers", "0", "--warmup", "1", "--log-every-n-steps", "2", "--logs", str(logs)]
    with pytest.raises(SystemExit) as exit_info:
        main([*common, "--train-data", str(SHARDS / "no_captions"), "--name", "run"])
    message = str(exit_info.value.code)
    assert "\n" not in message and message.startswith(
        "fastclip-train: error: data rank 0 epoch 1 read no usable sample of its 12; skipped 12 (missing_caption 12)")
    assert "img2dataset writes them only with --caption_col" in message
    log = (logs / "run" / "out.log").read_text()
    assert "data rank 0 epoch 1 (ended early): skipped 12 (missing_caption 12)" in log

    assert main([*common, "--train-data", str(SHARDS / "truncated"), "--name", "run"]) == 0
    run = logs / "run"
    assert (run / "checkpoints" / "epoch_1.pt").is_file()
    log = (run / "out.log").read_text()
    assert "an earlier start left no checkpoint; starting the run over" in log
    lost = make_corpus.TRUNCATED_SAMPLES - make_corpus.TRUNCATED_KEPT
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 5  # ceil(40 / 8): the stats count 40 samples
    assert records[-1]["samples_seen"] == 10 + make_corpus.TRUNCATED_KEPT  # real samples, not the pads
    assert records[-1]["skipped_by_reason"] == records[-1]["epoch_skipped_by_reason"] == {"unreadable_tar": lost}
    assert f"28 samples seen, skipped {lost} (unreadable_tar {lost}) this epoch, {lost} (unreadable_tar {lost}) " \
           "in the run" in log
    assert "unread past the budget 0" in log

    with pytest.raises(SystemExit) as exit_info:  # the run now has a checkpoint: the name is taken
        main([*common, "--train-data", str(SHARDS / "truncated"), "--name", "run"])
    assert "already holds a run" in str(exit_info.value.code)
    with pytest.raises(SystemExit):
        main([*common, "--train-data", str(SHARDS / "no_captions"), "--name", "again"])
    assert main([*common, "--train-data", str(SHARDS / "formats"), "--name", "again", "--resume", "latest"]) == 0
    assert "starting from scratch" in (logs / "again" / "out.log").read_text()


@pytest.mark.slow
def test_truncated_tar_under_torchrun_counts_each_lost_sample_once_over_ranks(tmp_path):
    """2 CPU ranks (gloo): the skip counts and samples_seen of metrics.jsonl are sums over the ranks."""
    import subprocess
    import sys

    logs = tmp_path / "logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "fastclip.train.cli", "--", "--logs", str(logs), "--name", "ddp", "--device", "cpu",
               "--dataset-type", "webdataset", "--train-data", str(SHARDS / "truncated"), "--data-backend", "torch",
               "--batch-size", "4", "--epochs", "1", "--workers", "0", "--warmup", "1", "--log-every-n-steps", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-4000:]
    lost = make_corpus.TRUNCATED_SAMPLES - make_corpus.TRUNCATED_KEPT
    last = json.loads((logs / "ddp" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 5  # ceil(40 / (2 x 4))
    assert last["skipped_by_reason"] == {"unreadable_tar": lost} and last["samples_seen"] == 10 + make_corpus.TRUNCATED_KEPT
