"""Configuration: profiles, --set overrides parsed as YAML, and clear errors for bad keys."""
from __future__ import annotations

import pytest

from jobs.config import ConfigError, load_config, parse_override


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
