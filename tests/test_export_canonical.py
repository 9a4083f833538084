"""Canonical dataset: Parquet in the Hugging Face layout, read by `datasets` and `pyarrow`
without custom code; lossless images; unique keys; dataset card features; sharding."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from export_support import SID, build_dataset, make_fixture
from PIL import Image

from demotrace.errors import ConfigError, ExportError
from demotrace.export import CanonicalDataset
from demotrace.export.canonical import hf_features_dict


@pytest.fixture
def built(tmp_path: Path):
    fx = make_fixture(tmp_path)
    out = build_dataset(fx, tmp_path / "ds")
    return fx, out


def test_layout_and_pyarrow(built) -> None:
    fx, out = built
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "data", "episodes.jsonl"]
    assert [p.name for p in (out / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    table = pq.read_table(out / "data")
    assert table.num_rows == 9 + 2
    keys = list(zip(table["episode_id"].to_pylist(), table["step_index"].to_pylist()))
    assert keys == [(f"{SID}-0", i) for i in range(9)] + [(f"{SID}-1", 0), (f"{SID}-1", 1)]
    assert len(set(keys)) == len(keys)
    rows = table.to_pylist()
    r0 = rows[0]
    # click at (640, 400) on a 1280x800 frame at (0, 0): 0.5, 0.5 and pixels 640, 400
    assert r0["action"]["type"] == "click" and r0["action"]["x_norm"] == 0.5 and r0["action"]["y_norm"] == 0.5
    assert r0["pyautogui"] == "pyautogui.click(x=640, y=400)"
    assert r0["observation"]["bounds"] == [0.0, 0.0, 1280.0, 800.0]
    assert r0["observation"]["gap_ns"] == 100_000_000
    assert r0["target"]["name"] == "OK" and r0["target"]["bounds"] == [600.0, 380.0, 80.0, 40.0]
    assert r0["context"]["app_id"] == "gedit" and r0["context"]["window_id"] == 42
    assert r0["instruction"] == "Say hello in gedit" and r0["episode_status"] == "success"
    assert json.loads(r0["action_json"])["source_seqs"] == [20, 21]
    # step 6 has no observation: image null, flagged
    assert rows[6]["image"] is None and rows[6]["observation"] is None and rows[6]["flags"] == ["no_observation"]
    # drag keeps its path
    assert [(p["x"], p["y"]) for p in rows[5]["action"]["path"]] == [(100, 100), (200, 150), (300, 200)]
    # episode B: frame is the left monitor (-1280, 0) at half size; click at (-640, 200)
    # -> norm ((-640 + 1280) / 1280, 200 / 800) = (0.5, 0.25); pyautogui takes SCREEN pixels
    # relative to that monitor's origin: (-640 - -1280, 200 - 0) = (640, 200), not the
    # half-size image's (320, 100)
    b0 = rows[9]
    assert (b0["action"]["x_norm"], b0["action"]["y_norm"]) == (0.5, 0.25)
    assert b0["pyautogui"] == "pyautogui.rightClick(x=640, y=200)"
    assert b0["instruction"] is None
    # images are the stored bytes, unchanged
    for r in rows:
        if r["image"] is not None:
            assert r["image"]["bytes"] in fx.blobs.values()
    assert rows[1]["image"]["path"] == f"{SID}-0/0001.png"
    # episodes index
    eps = [json.loads(x) for x in (out / "episodes.jsonl").read_text().splitlines()]
    assert [(e["episode_id"], e["num_steps"], e["status"]) for e in eps] == [
        (f"{SID}-0", 9, "success"), (f"{SID}-1", 2, "failure")]
    assert eps[1]["screen"] == [-1280.0, 0.0, 2560.0, 800.0]


def test_datasets_load_decodes_images_losslessly(built, tmp_path: Path, monkeypatch) -> None:
    fx, out = built
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train",
                               cache_dir=str(tmp_path / "hfcache"))
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.num_rows == 11
    row = ds[0]
    assert isinstance(row["image"], Image.Image)
    blob = fx.episodes[0].steps[0].observation.blob
    assert row["image"].convert("RGB").tobytes() == fx.images[blob].tobytes()
    assert row["image"].size == (1280, 800)
    # the half-size frame of episode B
    assert ds[9]["image"].size == (640, 400)
    assert ds[6]["image"] is None
    assert ds[0]["action"]["x_norm"] == 0.5
    # the folder itself (dataset card + data/) loads as the default config
    whole = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hfcache2"))
    assert whole.features == ds.features and whole.num_rows == 11


def test_card_yaml_declares_the_same_features(built) -> None:
    _, out = built
    import datasets
    import yaml

    text = (out / "README.md").read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md has no YAML front matter"
    meta = yaml.safe_load(m.group(1))
    from_card = datasets.Features._from_yaml_list(meta["dataset_info"]["features"])
    in_parquet = datasets.Features.from_arrow_schema(pq.read_schema(next((out / "data").iterdir())))
    assert from_card == in_parquet == datasets.Features.from_dict(hf_features_dict())
    assert from_card["image"] == datasets.Image()
    assert meta["dataset_info"]["splits"][0]["num_examples"] == 11
    assert meta["configs"][0]["data_files"][0]["path"] == "data/train-*"


def test_sharding_by_size_keeps_rows_and_order(tmp_path: Path) -> None:
    fx = make_fixture(tmp_path)
    out = build_dataset(fx, tmp_path / "ds", max_shard_bytes=1, max_row_group_rows=2)
    shards = sorted(p.name for p in (out / "data").iterdir())
    # rows flush in groups of 2 and every shard is over 1 byte: ceil(9/2) + ceil(2/2) = 6 shards
    assert shards == [f"train-{i:05d}-of-00006.parquet" for i in range(6)]
    ds = CanonicalDataset(out)
    got = [(info["episode_id"], [r["step_index"] for r in rows]) for info, rows in ds.iter_episodes()]
    assert got == [(f"{SID}-0", list(range(9))), (f"{SID}-1", [0, 1])]
    # rows flush two by two into a new shard each time: A's rows 0-7 fill shards 0-3, its row 8
    # and B's rows 0-1 follow, so B starts in shard 4
    assert [e["first_shard"] for e in ds.episodes()] == [0, 4]
    info, rows = ds.episode(f"{SID}-1")
    assert [r["step_index"] for r in rows] == [0, 1] and info["status"] == "failure"


def test_deterministic_output(tmp_path: Path) -> None:
    fx = make_fixture(tmp_path)
    a = build_dataset(fx, tmp_path / "a")
    b = build_dataset(fx, tmp_path / "b")
    ta, tb = pq.read_table(a / "data"), pq.read_table(b / "data")
    assert ta.equals(tb)
    assert (a / "episodes.jsonl").read_bytes() == (b / "episodes.jsonl").read_bytes()
    assert (a / "README.md").read_bytes() == (b / "README.md").read_bytes()


def test_errors_duplicate_keys_and_existing_output(tmp_path: Path) -> None:
    fx = make_fixture(tmp_path)
    from demotrace.export import write_dataset

    with pytest.raises(ExportError, match="duplicate episode id"):
        write_dataset(tmp_path / "dup", [(fx.episodes[0], fx.reader.read_blob)] * 2)
    # the failed build left no shard behind
    assert not list((tmp_path / "dup" / "data").glob("*.parquet"))
    out = build_dataset(fx, tmp_path / "ds")
    with pytest.raises(ConfigError, match="not empty"):
        build_dataset(fx, out)
    build_dataset(fx, out, overwrite=True)
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "thesis.docx").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a demotrace dataset"):
        build_dataset(fx, tmp_path / "foreign", overwrite=True)
    assert (tmp_path / "foreign" / "thesis.docx").exists()
    with pytest.raises(ExportError, match="demotrace build"):
        CanonicalDataset(tmp_path / "nothing")
    with pytest.raises(ExportError, match="no episode 'nope'"):
        CanonicalDataset(out).episode("nope")


def test_image_bytes_roundtrip_pixels(built) -> None:
    fx, out = built
    for row in pq.read_table(out / "data", columns=["image"]).to_pylist():
        if row["image"] is None:
            continue
        im = Image.open(io.BytesIO(row["image"]["bytes"])).convert("RGB")
        blob = [k for k, v in fx.blobs.items() if v == row["image"]["bytes"]][0]
        assert im.tobytes() == fx.images[blob].tobytes()
    assert os.path.getsize(out / "README.md") > 0
