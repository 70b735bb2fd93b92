"""Randomly initialised scorer models saved in their real on-disk layouts, for tests.

Nothing here is a stub: the scorers load these files through the same code that loads the trained
weights (transformers' from_pretrained for CLIP, torch.load of the original state-dict layouts for the
aesthetic head and the watermark detector). Only the weights are random.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from udfs.scorers.aesthetic import AestheticHead
from udfs.scorers.watermark import build_model

TINY_PROJECTION = 768  # the aesthetic head's input size, as with CLIP ViT-L/14


def save_tiny_clip(directory: Path, seed: int = 0) -> Path:
    """A CLIPModel with tiny towers (ViT-L/14's projection size), its image processor and a byte-level tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _save_byte_tokenizer(directory)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(tokenizer), max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=32),
        projection_dim=TINY_PROJECTION,
    )
    CLIPModel(config).eval().save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(directory)
    CLIPTokenizer.from_pretrained(directory).save_pretrained(directory)
    return directory


def _save_byte_tokenizer(directory: Path):
    """CLIP's BPE tokenizer with only its 512 byte-level symbols (no merges): every text encodes."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {token: index for index, token in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"), pad_token="<|endoftext|>")


def _byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each of the 256 bytes, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def save_aesthetic_head(path: Path, seed: int = 0) -> Path:
    """The improved aesthetic predictor's MLP with random weights, as the plain state dict its .pth holds."""
    torch.manual_seed(seed)
    torch.save(AestheticHead(TINY_PROJECTION).state_dict(), path)
    return path


def save_watermark_model(path: Path, seed: int = 0) -> Path:
    """The LAION watermark detector (EfficientNet-B3 + its 2-class MLP) with random weights, as its .pt holds."""
    torch.manual_seed(seed)
    torch.save(build_model().state_dict(), path)
    return path


def models_conf(directory: Path) -> dict:
    """A `models` section pointing the scorers at random-weight models under `directory` (built once)."""
    directory.mkdir(parents=True, exist_ok=True)
    clip = directory / "clip"
    if not (clip / "config.json").is_file():
        save_tiny_clip(clip)
    head, watermark = directory / "aesthetic.pth", directory / "watermark.pt"
    if not head.is_file():
        save_aesthetic_head(head)
    if not watermark.is_file():
        save_watermark_model(watermark)
    return {
        "clip": {"path": str(clip)},
        "aesthetic": {"path": str(head)},
        "watermark": {"path": str(watermark)},
        "ocr": {"path": None},
        "nsfw": {"path": None},
    }
