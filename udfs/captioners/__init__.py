"""Captioners: `source` (the source set's own caption), `florence2` (frames) and `qwen2_5_vl` (video).

`make_captioner(name, caption_conf, models_conf)` builds one from the `caption` and `models`
conf sections; `caption_stream` runs it over batches with decoding overlapped with generation.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from udfs.caption_text import HygieneRules
from udfs.captioners.base import CaptionModel
from udfs.device import task_device
from udfs.frames import FrameSampling, prefetch
from udfs.weights import MissingWeightsError, ModelSource, resolve

CAPTIONER_NAMES = ("source", "florence2", "qwen2_5_vl")


def make_captioner(
    name: str, caption_conf: Mapping[str, Any], models_conf: Mapping[str, Any], device: str | None = None
):
    """The captioner `name`, configured from `caption.<name>`, its weights from `models.<name>`, with
    a CLIP matcher for `match` when caption.match.enabled. Cheap: models load on first use."""
    rules = HygieneRules.from_conf(caption_conf["hygiene"])
    device = device or task_device(prefer_gpu=bool(caption_conf["use_gpu"]))
    matcher = clip_matcher(caption_conf, models_conf, device) if caption_conf["match"]["enabled"] else None
    if name == "source":
        from udfs.captioners.source import SourceCaptioner

        match = caption_conf["match"]
        sampling = FrameSampling(n=int(match["frames"]), where="uniform", size=match["size"])
        return SourceCaptioner(caption_conf["source"], rules, matcher, sampling)
    if name == "florence2":
        from udfs.captioners.florence2 import Florence2Captioner as captioner_class
    elif name == "qwen2_5_vl":
        from udfs.captioners.qwen2_5_vl import Qwen2_5_VLCaptioner as captioner_class
    else:
        raise ValueError(f"no captioner named {name!r}; captioners: {', '.join(CAPTIONER_NAMES)}")
    return captioner_class(
        caption_conf[name], models_conf, rules, matcher, device=device, dtype=caption_conf["dtype"],
        attn_implementation=caption_conf["attn_implementation"], allow_download=caption_conf["allow_download"],
    )


def clip_source(models_conf: Mapping[str, Any]) -> ModelSource:
    """The CLIP weights `match` uses: models.clip, the score stage's CLIP."""
    from udfs.scorers.aesthetic import CLIP_ORIGIN

    return ModelSource("clip", (models_conf.get("clip") or {}).get("path"), "hf", CLIP_ORIGIN)


def clip_matcher(caption_conf: Mapping[str, Any], models_conf: Mapping[str, Any], device: str):
    from udfs.captioners.match import ClipMatcher
    from udfs.clip import ClipEncoder

    path = resolve(clip_source(models_conf), caption_conf["allow_download"])
    return ClipMatcher(ClipEncoder(path, device, caption_conf["dtype"]), int(caption_conf["match"]["frames"]))


def check_weights(name: str, caption_conf: Mapping[str, Any], models_conf: Mapping[str, Any]) -> None:
    """MissingWeightsError, before any work, if the captioner's or CLIP's weights are not there."""
    allow = caption_conf["allow_download"]
    if name != "source":
        CaptionModel.from_conf(name, models_conf).resolve(allow)
    if caption_conf["match"]["enabled"]:
        try:
            resolve(clip_source(models_conf), allow)
        except MissingWeightsError as missing:
            raise MissingWeightsError(
                f"{missing} (CLIP scores the captions' `match`; to caption without it: "
                "--set caption.match.enabled=false)"
            ) from None


def known_kinds(name: str, caption_conf: Mapping[str, Any]) -> list[str]:
    """The kinds a captioner can write: its prompts' kinds, or the source's one kind."""
    if name == "source":
        return [str(caption_conf["source"]["kind"])]
    if name not in CAPTIONER_NAMES:
        raise ValueError(f"no captioner named {name!r}; captioners: {', '.join(CAPTIONER_NAMES)}")
    return list(caption_conf[name]["prompts"])


def default_kinds(name: str, caption_conf: Mapping[str, Any]) -> list[str]:
    """The kinds a run writes when none are asked for: caption.<name>.kinds (the source's one kind)."""
    return known_kinds(name, caption_conf) if name == "source" else list(caption_conf[name]["kinds"])


def chunks(batches: Iterable[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    """The rows of `batches` regrouped into frames of at most `size` rows, in order."""
    for batch in batches:
        for start in range(0, len(batch), size):
            yield batch.iloc[start:start + size]


def caption_stream(
    captioner, batches: Iterable[pd.DataFrame], decode_workers: int, prefetch_batches: int
) -> Iterator[pd.DataFrame]:
    """`captions` rows for every row of `batches`: a thread pool decodes frames and builds inputs
    up to `prefetch_batches` model batches ahead while the model generates on the current one."""
    captioner.load()
    with ThreadPoolExecutor(max_workers=decode_workers, thread_name_prefix="caption-decode") as pool:
        for prepared in prefetch(chunks(batches, captioner.batch_size), captioner.prepare, pool, prefetch_batches):
            yield captioner.generate(prepared)
