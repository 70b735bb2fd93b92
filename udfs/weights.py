"""Where a model's weights are, checked before any work starts.

A model's location is the conf key `models.<name>.path`: a local file or directory, or a
Hugging Face hub id (`openai/clip-vit-large-patch14`). A hub id is looked up in the local hub
cache; it is fetched only where `allow_download` says so (never on our offline machines).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from udfs.errors import VidlakeError


class MissingWeightsError(VidlakeError):
    """A model's weights are not where the configuration points."""


@dataclass(frozen=True)
class ModelSource:
    """One model a stage needs: its conf name, the configured path, and where a user gets it."""

    name: str  # the `models.<name>` entry
    path: str | None
    kind: str  # "file" (a weights file), "hf" (a transformers directory or hub id)
    origin: str  # where to get the weights, for the error message
    revision: str | None = None  # a hub id's branch, tag or commit (None: main)


def is_local(path: str) -> bool:
    """A path that names the local filesystem rather than a hub id."""
    return path.startswith(("/", "./", "../", "~", "file://")) or Path(path).expanduser().exists() or (
        Path(path).suffix in (".pth", ".pt", ".onnx", ".safetensors", ".bin")
    )


def resolve(source: ModelSource, allow_download: bool = False) -> str:
    """The local path of the weights (for a hub id: the cached snapshot directory), or MissingWeightsError."""
    path = source.path
    if not path:
        raise _missing(source, "no path is configured")
    if is_local(path):
        local = Path(path.removeprefix("file://")).expanduser()
        wanted_file = source.kind == "file"
        if (wanted_file and local.is_file()) or (not wanted_file and (local / "config.json").is_file()):
            return str(local)
        found = "nothing" if not local.exists() else ("a directory" if local.is_dir() else "a file")
        expected = "a weights file" if wanted_file else "a directory with config.json"
        raise _missing(source, f"expected {expected} at {local}, found {found}")
    if source.kind != "hf":
        raise _missing(source, f"{path!r} is not a local file")
    return _hub_snapshot(source, allow_download)


def _hub_snapshot(source: ModelSource, allow_download: bool) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(source.path, revision=source.revision, local_files_only=True)
    except Exception as cached_error:  # noqa: BLE001 - any failure means "not in the cache"
        if not allow_download:
            where = f"hub id {source.path!r}" + (f" at revision {source.revision!r}" if source.revision else "")
            raise _missing(source, f"{where} is not in the local Hugging Face cache") from cached_error
    try:
        return snapshot_download(
            source.path, revision=source.revision, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja"]
        )
    except Exception as error:  # noqa: BLE001 - network, auth and not-found errors all mean missing weights
        raise _missing(source, f"downloading hub id {source.path!r} failed ({error})") from error


def _missing(source: ModelSource, what: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"model {source.name!r}: {what} (models.{source.name}.path = {source.path!r}). "
        f"Get the weights from {source.origin}, copy them to this machine (or a path every executor can read) "
        f"and point the configuration at them: --set models.{source.name}.path=/path/to/them"
    )


def file_digest(path: str, length: int = 12) -> str:
    """The first `length` hex digits of the file's sha256: names the exact weights in `scorer_versions`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]
