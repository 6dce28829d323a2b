"""Shard listing and sample counts: brace expansion, '::' sources, _stats.json / sizes.json / DALI index headers,
--train-num-samples, errors naming the source; dataset-type detection; image folders with caption templates."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from fastclip.data.folder import CAPTION_TEMPLATES, class_caption, open_image_folder
from fastclip.data.sources import (
    DataSourceError,
    detect_dataset_type,
    expand_braces,
    expand_shard_spec,
    open_webdataset,
    read_index_header,
    split_sources,
)
from tests.wds_fixtures import jpeg, write_empty_shard, write_good_shards, write_zoo_shard


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("a.tar", ["a.tar"]),
        ("s/{00000..00003}.tar", [f"s/{i:05d}.tar" for i in range(4)]),
        ("s/{8..11}.tar", ["s/8.tar", "s/9.tar", "s/10.tar", "s/11.tar"]),
        ("s/{008..011}.tar", ["s/008.tar", "s/009.tar", "s/010.tar", "s/011.tar"]),
        ("s/{3..1}.tar", ["s/3.tar", "s/2.tar", "s/1.tar"]),
        ("{a,b}/{0..1}.tar", ["a/0.tar", "a/1.tar", "b/0.tar", "b/1.tar"]),
        ("x{a,b{1..2}}y", ["xay", "xb1y", "xb2y"]),
        ("{only}.tar", ["{only}.tar"]),
    ],
)
def test_expand_braces(pattern, expected):
    assert expand_braces(pattern) == expected


def test_expand_braces_rejects_unbalanced_braces():
    with pytest.raises(DataSourceError, match="unbalanced"):
        expand_braces("s/{0..3.tar")


def test_split_sources_on_double_colon():
    assert split_sources("a/{0..1}.tar::b/c.tar") == ["a/{0..1}.tar", "b/c.tar"]
    with pytest.raises(DataSourceError, match="empty source"):
        split_sources("a.tar::")


def test_counts_from_img2dataset_stats_and_joined_sources(tmp_path):
    write_good_shards(tmp_path / "one", [3, 5])
    write_good_shards(tmp_path / "two", [4], first_shard=7)
    spec = f"{tmp_path}/one/{{00000..00001}}.tar::{tmp_path}/two/00007.tar"
    source = open_webdataset(spec)
    assert [Path(s).name for s in source.shards] == ["00000.tar", "00001.tar", "00007.tar"]
    assert source.counts == (3, 5, 4)
    assert source.num_samples == 12 and source.counts_exact
    assert source.count_origin == "img2dataset _stats.json"
    # --train-num-samples sets the epoch budget; the per-shard layout still comes from the metadata.
    budget = open_webdataset(spec, num_samples=10)
    assert budget.num_samples == 10 and budget.counts == (3, 5, 4)


def test_a_folder_stands_for_its_tars(tmp_path):
    write_good_shards(tmp_path, [2, 3])
    assert [Path(p).name for p in expand_shard_spec(str(tmp_path))] == ["00000.tar", "00001.tar"]


def test_counts_from_sizes_json(tmp_path):
    write_good_shards(tmp_path, [3, 2], stats=False)
    (tmp_path / "sizes.json").write_text(json.dumps({"00000.tar": 3, "00001.tar": 2}))
    source = open_webdataset(f"{tmp_path}/{{00000..00001}}.tar")
    assert source.counts == (3, 2) and source.count_origin == "sizes.json"


def test_counts_from_dali_wds2idx_index_headers(tmp_path):
    write_good_shards(tmp_path, [4], stats=False)
    write_zoo_shard(tmp_path, "00001.tar")
    (tmp_path / "00001_stats.json").unlink()
    wds2idx = shutil.which("wds2idx") or str(Path(__import__("sys").executable).parent / "wds2idx")
    if not Path(wds2idx).exists():
        pytest.skip("wds2idx (shipped with nvidia-dali) is not installed")
    for name in ("00000", "00001"):
        subprocess.run([wds2idx, str(tmp_path / f"{name}.tar"), str(tmp_path / f"{name}.idx")], check=True,
                       capture_output=True)
    assert read_index_header(tmp_path / "00000.idx") == 4
    source = open_webdataset(f"{tmp_path}/{{00000..00001}}.tar")
    # DALI counts key groups, complete or not: the zoo shard has 13 (4 of them are skipped when read).
    assert source.counts == (4, 13) and source.count_origin == "DALI index (wds2idx)"


def test_index_header_is_validated(tmp_path):
    bad = tmp_path / "x.idx"
    bad.write_text("not an index\n")
    with pytest.raises(DataSourceError, match="x.idx"):
        read_index_header(bad)


def test_without_metadata_the_budget_is_spread_evenly_with_a_warning(tmp_path):
    write_good_shards(tmp_path, [3, 3, 3], stats=False)
    with pytest.warns(UserWarning, match="spreading --train-num-samples=10"):
        source = open_webdataset(f"{tmp_path}/{{00000..00002}}.tar", num_samples=10)
    assert source.counts == (4, 3, 3) and not source.counts_exact and source.num_samples == 10


def test_without_metadata_or_budget_the_error_says_what_to_do(tmp_path):
    write_good_shards(tmp_path, [3], stats=False)
    with pytest.raises(DataSourceError, match=r"00000\.tar.*--train-num-samples.*wds2idx"):
        open_webdataset(str(tmp_path / "00000.tar"))


def test_missing_shards_are_named(tmp_path):
    write_good_shards(tmp_path, [2])
    with pytest.raises(DataSourceError, match=r"2 shard\(s\) do not exist: .*00001\.tar, .*00002\.tar"):
        open_webdataset(f"{tmp_path}/{{00000..00002}}.tar")
    (tmp_path / "no_tars").mkdir()
    with pytest.raises(DataSourceError, match=r"no_tars: a folder .* holds no .tar shards"):
        open_webdataset(str(tmp_path / "no_tars"))


def test_an_empty_tar_alone_is_an_error_naming_the_source(tmp_path):
    write_empty_shard(tmp_path, "00000.tar")
    with pytest.raises(DataSourceError, match=r"00000\.tar.*holds no samples"):
        open_webdataset(str(tmp_path / "00000.tar"))
    (tmp_path / "00000_stats.json").unlink()
    with pytest.warns(UserWarning), pytest.raises(DataSourceError, match="holds no samples"):
        open_webdataset(str(tmp_path / "00000.tar"), num_samples=5)


def test_an_empty_tar_among_good_ones_counts_zero(tmp_path):
    write_good_shards(tmp_path, [3])
    write_empty_shard(tmp_path, "00001.tar")
    source = open_webdataset(f"{tmp_path}/{{00000..00001}}.tar")
    assert source.counts == (3, 0) and source.num_samples == 3


def test_detect_dataset_type(tmp_path):
    assert detect_dataset_type("data/train.csv") == "csv"
    assert detect_dataset_type("data/train.TSV") == "csv"
    assert detect_dataset_type("shards/{00000..00009}.tar::other/0.tar") == "webdataset"
    write_good_shards(tmp_path / "shards", [1])
    assert detect_dataset_type(str(tmp_path / "shards")) == "webdataset"
    (tmp_path / "folder" / "cat").mkdir(parents=True)
    assert detect_dataset_type(str(tmp_path / "folder")) == "folder"
    with pytest.raises(DataSourceError, match="cannot tell"):
        detect_dataset_type(str(tmp_path / "data.parquet"))


def _image_folder(root: Path) -> Path:
    for classname, count in (("golden_retriever", 2), ("tabby cat", 3)):
        (root / classname / "sub").mkdir(parents=True)
        for index in range(count):
            name = f"{index}.JPG" if index == 0 else f"{index}.jpg"
            (root / classname / ("sub" if index == 2 else "") / name).write_bytes(jpeg(index))
        (root / classname / "notes.txt").write_text("not an image")
    return root


def test_image_folder_lists_classes_and_fills_caption_templates(tmp_path):
    source = open_image_folder(str(_image_folder(tmp_path)))
    assert source.classnames == ("golden_retriever", "tabby cat")
    assert source.num_samples == 5 and source.labels == (0, 0, 1, 1, 1)
    assert any(f.endswith("0.JPG") for f in source.files) and not any(f.endswith(".txt") for f in source.files)
    captions = {source.caption(i, seed=0, epoch=e) for i in range(5) for e in range(8)}
    assert all(c in {class_caption(n, t) for n in source.classnames for t in CAPTION_TEMPLATES} for c in captions)
    assert "a photo of a golden retriever." == class_caption("golden_retriever", "a photo of a {}.")
    assert source.caption(0, seed=0, epoch=0) == source.caption(0, seed=0, epoch=0)
    assert len({source.caption(0, seed=0, epoch=e) for e in range(20)}) > 1  # templates vary across epochs


def test_image_folder_rank_orders_partition_the_folder(tmp_path):
    source = open_image_folder(str(_image_folder(tmp_path)))
    for world_size in (1, 2, 3):
        seen = [i for rank in range(world_size)
                for i in source.rank_order(world_size=world_size, rank=rank, seed=1, epoch=0)]
        assert sorted(seen) == list(range(5))


def test_image_folder_errors_name_the_folder(tmp_path):
    with pytest.raises(DataSourceError, match="no such folder"):
        open_image_folder(str(tmp_path / "absent"))
    with pytest.raises(DataSourceError, match="no class subfolders"):
        open_image_folder(str(tmp_path))
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataSourceError, match="hold no images"):
        open_image_folder(str(tmp_path))
