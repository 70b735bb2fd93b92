"""CLIP image and text embeddings through transformers, with the image preprocessing done in torch on the device.

The processor's work (resize the short side with bicubic filtering, centre-crop, scale, normalise)
runs on the GPU on a uint8 batch, so the CPU only decodes frames. Each tower loads once per Python
worker (udfs.device.cached_model) and only when first used: a scorer that needs image embeddings
never loads the text tower.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from udfs.device import cached_model

# OpenAI CLIP's normalisation, used when a checkpoint ships no preprocessor_config.json.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_dtype(precision: str, device: str) -> torch.dtype:
    """The dtype to run a model in: `precision` (bfloat16, float16, float32) on CUDA, float32 on the CPU."""
    if precision not in DTYPES:
        raise ValueError(f"precision {precision!r} is not one of {', '.join(DTYPES)}")
    return DTYPES[precision] if device.startswith("cuda") else torch.float32


def to_device_images(frames: np.ndarray | torch.Tensor, device: str) -> torch.Tensor:
    """(N, H, W, 3) uint8 frames as an (N, 3, H, W) uint8 tensor on the device (pinned, async copy on CUDA)."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if device.startswith("cuda") and tensor.device.type == "cpu":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    else:
        tensor = tensor.to(device)
    return tensor.permute(0, 3, 1, 2)


class ClipEncoder:
    """CLIP from a transformers checkpoint (`path`: a local directory or a cached hub snapshot)."""

    def __init__(self, path: str, device: str = "cpu", precision: str = "bfloat16"):
        self.path, self.device = path, device
        self.dtype = compute_dtype(precision, device)
        self.resize_to, self.crop_to, self.mean, self.std = _preprocessing(path)

    def image_embeddings(self, frames: np.ndarray | torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """(N, D) float32 image embeddings (the projected CLIP embedding) of (N, H, W, 3) uint8 RGB frames."""
        model = self._vision()
        pixels = self.preprocess(to_device_images(frames, self.device))
        with torch.inference_mode():
            embeds = model(pixel_values=pixels.to(self.dtype)).image_embeds.float()
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def text_embeddings(self, texts: list[str], normalize: bool = True) -> torch.Tensor:
        """(N, D) float32 text embeddings of the texts (truncated to the model's context length)."""
        model, tokenizer = self._text()
        tokens = tokenizer(
            list(texts), padding=True, truncation=True, max_length=model.config.max_position_embeddings,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            embeds = model(**tokens).text_embeds.float()
        return F.normalize(embeds, dim=-1) if normalize else embeds

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) uint8 on the device -> normalised float32 (N, 3, crop, crop), as CLIPImageProcessor does."""
        height, width = images.shape[-2:]
        scale = self.resize_to / min(height, width)
        size = (max(self.resize_to, round(height * scale)), max(self.resize_to, round(width * scale)))
        resized = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
        top, left = (size[0] - self.crop_to) // 2, (size[1] - self.crop_to) // 2
        cropped = resized[:, :, top : top + self.crop_to, left : left + self.crop_to].clamp(0, 255) / 255.0
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (cropped - mean) / std

    def _vision(self):
        return cached_model(("clip-vision", self.path, self.device, self.dtype), self._load_vision)

    def _text(self):
        return cached_model(("clip-text", self.path, self.device, self.dtype), self._load_text)

    def _load_vision(self):
        from transformers import CLIPVisionModelWithProjection

        config = _tower_config(self.path, "vision_config")
        model = CLIPVisionModelWithProjection.from_pretrained(self.path, config=config, dtype=self.dtype)
        return model.to(self.device).eval()

    def _load_text(self):
        from transformers import AutoTokenizer, CLIPTextModelWithProjection

        config = _tower_config(self.path, "text_config")
        model = CLIPTextModelWithProjection.from_pretrained(self.path, config=config, dtype=self.dtype)
        return model.to(self.device).eval(), AutoTokenizer.from_pretrained(self.path)


def _tower_config(path: str, tower: str):
    """One tower's config from a full CLIP checkpoint, with the checkpoint's projection size.

    A CLIPModel checkpoint (what openai/clip-vit-large-patch14 is) keeps `projection_dim` at the
    top level; the tower's own default (512) would not match the saved projection weights."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "model_type", None) != "clip":
        return config
    tower_config = getattr(config, tower)
    tower_config.projection_dim = config.projection_dim
    return tower_config


def _preprocessing(path: str) -> tuple[int, int, tuple, tuple]:
    """(short-side size, crop size, mean, std) from the checkpoint's preprocessor_config.json, else
    the model's image size with OpenAI's normalisation."""
    processor_file = Path(path) / "preprocessor_config.json"
    if processor_file.is_file():
        spec = json.loads(processor_file.read_text())
        size = spec.get("size", 224)
        crop = spec.get("crop_size", size)
        resize_to = size.get("shortest_edge", size.get("height")) if isinstance(size, dict) else size
        crop_to = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
        return (int(resize_to), int(crop_to), tuple(spec.get("image_mean", OPENAI_CLIP_MEAN)),
                tuple(spec.get("image_std", OPENAI_CLIP_STD)))
    config_file = Path(path) / "config.json"
    spec = json.loads(config_file.read_text()) if config_file.is_file() else {}
    image_size = int(spec.get("vision_config", spec).get("image_size", 224))
    return image_size, image_size, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
