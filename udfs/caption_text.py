"""Caption hygiene: what a vision-language model says, cleaned and judged before it reaches the table.

Captioners open with boilerplate ("The image shows", "In this video, we see") that a
text-to-video model would learn to expect in every prompt, sometimes echo the question they
were asked, and sometimes fall into a loop ("a dog a dog a dog ..."). This module removes the
first two and flags the last, so a bad caption is written with `quality` degenerate or empty
instead of passing as a good one.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

QUALITIES = ("ok", "empty", "degenerate")

# Openings that describe the medium instead of the content. Each is removed at the start of a
# caption, longest first, together with a following comma or "that".
BOILERPLATE_OPENINGS = (
    r"in (?:this|the) (?:video|clip|image|picture|frame|footage|scene|sequence)s?,? "
    r"(?:we (?:can )?see|there (?:is|are))",
    r"in (?:this|the) (?:video|clip|image|picture|frame|footage|scene|sequence)s?,?",
    r"(?:this|the) (?:video|clip|image|picture|photo|frame|footage|scene|sequence|grid)s? "
    r"(?:shows|show|depicts|depict|features|feature|captures|capture|displays|display|presents|present|"
    r"showcases|showcase|is of|contains|contain|highlights|highlight|portrays|portray)(?: that)?",
    r"(?:this|the) (?:video|clip|image|picture|frame|footage|scene) is (?:a|an) "
    r"(?:video|clip|image|picture|frame|shot|scene) (?:of|showing|that shows)",
    r"(?:we (?:can )?see|there (?:is|are) shown|here (?:we see|is|are))",
    r"(?:a |an )?(?:close-up |closeup )?(?:image|picture|photo|frame|still) of",
)
_OPENING = re.compile(r"^\s*(?:" + "|".join(f"(?:{p})" for p in BOILERPLATE_OPENINGS) + r")[\s,:;-]*", re.I)
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]{1,40}\|>|</?s>|<pad>|<unk>")
_WORD = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*", re.UNICODE)


@dataclass(frozen=True)
class HygieneRules:
    """When a caption counts as degenerate (see `caption_quality`).

    max_repeats: a word n-gram (n up to max_ngram) repeated back to back more than this many
    times is a generation loop. min_distinct_ratio: for captions of at least min_words words,
    the share of distinct word trigrams below which the caption repeats itself.
    """

    max_repeats: int = 3
    max_ngram: int = 6
    min_words: int = 12
    min_distinct_ratio: float = 0.5

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> HygieneRules:
        return cls(
            max_repeats=int(conf["max_repeats"]),
            max_ngram=int(conf["max_ngram"]),
            min_words=int(conf["min_words"]),
            min_distinct_ratio=float(conf["min_distinct_ratio"]),
        )


DEFAULT_RULES = HygieneRules()


@dataclass(frozen=True)
class CleanCaption:
    caption: str
    words: int
    quality: str


def clean_caption(text: str | None, prompt: str | None = None) -> str:
    """The caption without special tokens, an echo of the prompt, or boilerplate openings."""
    if text is None:
        return ""
    caption = _SPECIAL_TOKEN.sub(" ", text)
    caption = re.sub(r"\s+", " ", caption).strip()
    caption = _strip_echo(caption, prompt)
    for _ in range(3):  # "The image shows that in this video we see ..." needs more than one pass
        stripped = _OPENING.sub("", caption, count=1).strip()
        if stripped == caption:
            break
        caption = stripped
    return _capitalise(caption)


def _strip_echo(caption: str, prompt: str | None) -> str:
    """Removes the prompt when the model repeats it before answering (compared ignoring case)."""
    if not prompt:
        return caption
    echo = re.sub(r"\s+", " ", _SPECIAL_TOKEN.sub(" ", prompt)).strip()
    if echo and caption.lower().startswith(echo.lower()):
        return caption[len(echo):].lstrip(" :,-\n")
    return caption


def _capitalise(caption: str) -> str:
    return caption[:1].upper() + caption[1:] if caption else caption


def words(caption: str) -> list[str]:
    """The caption's words, lower-cased (letters and digits; "close-up" and "man's" are one word)."""
    return [w.lower() for w in _WORD.findall(caption)]


def caption_quality(caption: str, rules: HygieneRules = DEFAULT_RULES) -> str:
    """ok, empty (no words at all) or degenerate (a generation loop, see `HygieneRules`)."""
    tokens = words(caption)
    if not tokens:
        return "empty"
    if _longest_back_to_back_repeat(tokens, rules.max_ngram) > rules.max_repeats:
        return "degenerate"
    if len(tokens) >= rules.min_words and _distinct_ratio(tokens, 3) < rules.min_distinct_ratio:
        return "degenerate"
    return "ok"


def _longest_back_to_back_repeat(tokens: Sequence[str], max_ngram: int) -> int:
    """The most times any n-gram (n <= max_ngram) occurs consecutively ("a dog a dog a dog": 3)."""
    longest = 1
    for n in range(1, max_ngram + 1):
        for start in range(len(tokens) - n + 1):
            gram, count, position = tokens[start:start + n], 1, start + n
            while tokens[position:position + n] == gram:
                count, position = count + 1, position + n
            longest = max(longest, count)
    return longest


def _distinct_ratio(tokens: Sequence[str], n: int) -> float:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def tidy(text: str | None, prompt: str | None = None, rules: HygieneRules = DEFAULT_RULES) -> CleanCaption:
    """Cleaned caption, its word count and its quality, in one go."""
    caption = clean_caption(text, prompt)
    return CleanCaption(caption=caption, words=len(words(caption)), quality=caption_quality(caption, rules))
