"""Configuration: profiles, --set overrides parsed as YAML, and clear errors for bad keys and values."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobs.cli import run_stage
from jobs.config import OPEN_SECTIONS, RANGES, ConfigError, defaults_files, load_config, parse_override, read_defaults


def test_local_profile_is_the_embedded_default():
    cfg = load_config("local")
    assert cfg.get("spark.master") == "local[*]"
    assert cfg.get("lake.root") == "./lake"


def test_cluster_profile_points_the_lake_at_object_storage():
    cfg = load_config("cluster")
    assert cfg.get("spark.master") is None
    assert cfg.get("lake.root").startswith("s3://")


def test_overrides_are_parsed_as_yaml():
    cfg = load_config("local", ["spark.master=local-cluster[1,2,1024]", "lake.root=s3://b/lake",
                                "lake.max_rows_per_file=5000", "spark.conf.spark.executor.memory=2g",
                                "spark.conf.spark.sql.shuffle.partitions=4"])
    assert cfg.get("spark.master") == "local-cluster[1,2,1024]"
    assert cfg.get("lake.root") == "s3://b/lake"
    assert cfg.get("lake.max_rows_per_file") == 5000
    assert cfg.get("spark.conf")["spark.executor.memory"] == "2g"
    assert cfg.get("spark.conf.spark.sql.shuffle.partitions") == "4"
    assert parse_override("download.allow_hosts=[127.0.0.1, localhost]") == (
        "download.allow_hosts", ["127.0.0.1", "localhost"])


def test_unknown_key_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="lake.rooot"):
        load_config("local", ["lake.rooot=/tmp/x"])


def test_a_value_of_the_wrong_kind_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match="lake.max_rows_per_file.*expects a int"):
        load_config("local", ["lake.max_rows_per_file=[1, 2]"])


def test_malformed_override_and_unknown_profile_are_errors():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("local", ["lake.root"])
    with pytest.raises(ConfigError, match="unknown conf profile 'nope'"):
        load_config("nope")


def test_a_profile_file_with_a_typo_is_an_error(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("lake:\n  engin: delta-rs\n")
    with pytest.raises(ConfigError, match="lake.engin"):
        load_config(str(profile))


def _numeric_keys(data: dict, prefix: str = "") -> Iterator[str]:
    """Dotted keys of the numbers (and lists holding numbers) in a defaults file, open sections aside."""
    for name, value in data.items():
        key = f"{prefix}{name}"
        if key in OPEN_SECTIONS:
            continue
        if isinstance(value, dict):
            yield from _numeric_keys(value, f"{key}.")
        elif any(_is_number(v) for v in (value if isinstance(value, list) else [value])):
            yield key


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_every_numeric_default_has_a_range_declared_in_its_own_file():
    missing = []
    for path in defaults_files():
        data, ranges = read_defaults(path)
        missing += [f"{key} (add `{key}: {{min: ...}}` under {RANGES}: in conf/defaults/{path.name})"
                    for key in _numeric_keys(data) if key not in ranges]
    assert not missing, "numeric conf keys without a declared range: " + "; ".join(missing)


def test_the_defaults_and_every_profile_are_inside_their_ranges():
    cfg = load_config("local")
    assert len(cfg.ranges) > 100
    assert RANGES not in cfg.data  # the tables are declarations, not a section a stage reads
    for profile in ("cluster", "databricks"):
        load_config(profile)


def test_a_range_for_a_key_its_file_does_not_define_is_an_error(tmp_path):
    stale = tmp_path / "stale.yaml"
    stale.write_text("lake:\n  max_rows_per_file: 5\nranges:\n  lake.max_rows: {min: 1}\n")
    with pytest.raises(ConfigError, match="range is declared for 'lake.max_rows', which is not a value"):
        read_defaults(stale)
    section = tmp_path / "section.yaml"
    section.write_text("lake:\n  max_rows_per_file: 5\nranges:\n  lake: {min: 1}\n")
    with pytest.raises(ConfigError, match="'lake', which is not a value"):
        read_defaults(section)
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text("lake:\n  max_rows_per_file: 5\nranges:\n  lake.max_rows_per_file: {least: 1}\n")
    with pytest.raises(ConfigError, match="range of 'lake.max_rows_per_file' must be a mapping of min, max"):
        read_defaults(misspelt)


@pytest.mark.parametrize(("argv", "override", "message"), [
    # 0 rows per file made TableFiles.write open empty files forever; 0 per task divided by zero.
    (["status"], "lake.max_rows_per_file=0", "'lake.max_rows_per_file' must be at least 1, got 0"),
    (["split"], "split.videos_per_task=0", "'split.videos_per_task' must be at least 1, got 0"),
    (["score"], "score.clips_per_task=0", "'score.clips_per_task' must be at least 1, got 0"),
    (["caption"], "caption.rows_per_task=0", "'caption.rows_per_task' must be at least 1, got 0"),
    (["score"], "score.gpus_per_task=0", "'score.gpus_per_task' must be above 0, got 0.0"),
    (["caption"], "caption.source.min_overlap=1.5", "'caption.source.min_overlap' must be at least 0 and at most 1, "
                                                   "got 1.5"),
    (["caption"], "caption.florence2.grid=[0, 4]", "'caption.florence2.grid' must be at least 1, got [0, 4]"),
    (["download"], "download.partitions_per_batch=0", "'download.partitions_per_batch' must be at least 1, got 0"),
    (["download"], "download.partitions_per_batch=many", "'download.partitions_per_batch' expects a number, "
                                                        "got 'many'"),
])
def test_a_value_out_of_range_is_a_one_line_error_before_the_stage_runs(tmp_path, capsys, argv, override, message):
    lake = tmp_path / "lake"
    assert run_stage([*argv, "--lake", str(lake), "--set", "spark.master=local[2]", "--set", override]) == 2
    assert capsys.readouterr().err == f"vidlake: error: configuration key {message}\n"
    assert not lake.exists()


def test_a_profile_value_out_of_range_is_an_error_naming_the_key(tmp_path):
    profile = tmp_path / "mine.yaml"
    profile.write_text("split:\n  commit_every: 0\n")
    with pytest.raises(ConfigError, match="'split.commit_every' must be at least 1, got 0"):
        load_config(str(profile))
    assert load_config(str(profile), ["split.commit_every=10"]).get("split.commit_every") == 10


def test_setting_a_value_out_of_range_is_refused_and_changes_nothing():
    cfg = load_config("local")
    with pytest.raises(ConfigError, match="'split.clips.max_clip_s' must be above 0, got -1.0"):
        cfg.set("split.clips.max_clip_s", -1)
    assert cfg.get("split.clips.max_clip_s") == 10.0
    cfg.set("split.clips.max_clip_s", 4)
    assert cfg.get("split.clips.max_clip_s") == 4.0
