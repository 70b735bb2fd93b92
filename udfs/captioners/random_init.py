"""Random-weight checkpoints of the real captioner architectures, built offline.

No model hub is reachable from our machines, so tests and benchmarks build a checkpoint here
(a config, random weights, a byte-level BPE tokenizer made with the `tokenizers` library, the
model's own image/video processors), save it with `save_pretrained` and load it back through
the same code a real checkpoint goes through. "tiny" presets run in seconds on a CPU; the
full-size presets have the published architectures (Florence-2-large, Qwen2.5-VL-3B/7B) for
GPU throughput benchmarks, where random weights cost exactly what trained ones do.
"""
from __future__ import annotations

import json
from pathlib import Path

# Caption-like text the tiny tokenizers learn their merges from, so random generation picks
# mostly whole words.
CORPUS = (
    "a man rides a red bicycle along a coastal road at sunset while the camera follows him",
    "a golden retriever runs across a snowy field and jumps to catch a ball",
    "a busy city street at night with cars and people walking past bright shop windows",
    "the camera pans slowly over a calm mountain lake with pine trees and mist",
    "a woman in a blue dress dances in a kitchen, close-up shot, warm light",
    "aerial view of waves breaking on a sandy beach, the drone moves forward",
    "a chef slices onions on a wooden board in a restaurant kitchen",
    "two children play football in a park on a sunny afternoon, static camera",
    "describe this video in one sentence. what does the image describe?",
    "describe in detail what is shown in the image. the main object, the background, the style",
)

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
)

# The chat format of Qwen2.5-VL, reduced to what captioning uses (a real checkpoint ships its own).
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

FLORENCE2_PRESETS = {
    "tiny": {
        "vision": dict(depths=[1, 1, 1, 1], embed_dim=[8, 16, 16, 32], num_heads=[1, 1, 1, 2],
                       num_groups=[1, 1, 1, 2], window_size=2, projection_dim=32),
        "text": dict(d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     max_position_embeddings=256),
        "image_size": 64, "vocab_size": None, "init_std": 0.5,
    },
    "large": {  # microsoft/Florence-2-large: DaViT + BART-large, 768x768 input
        "vision": dict(depths=[1, 1, 9, 1], embed_dim=[256, 512, 1024, 2048], num_heads=[8, 16, 32, 64],
                       num_groups=[8, 16, 32, 64], window_size=12, projection_dim=1024),
        "text": dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                     decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                     max_position_embeddings=1024),
        "image_size": 768, "vocab_size": 51289, "init_std": 0.02,
    },
}

QWEN2_5_VL_PRESETS = {
    "tiny": {
        "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     num_key_value_heads=1, max_position_embeddings=4096, tie_word_embeddings=False,
                     rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        "vision": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                       fullatt_block_indexes=[1], window_size=56),
        "vocab_size": None, "init_std": 0.5, "max_pixels": 28 * 28 * 16,
    },
    "3b": {  # Qwen/Qwen2.5-VL-3B-Instruct
        "text": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                     num_key_value_heads=2, max_position_embeddings=128000, tie_word_embeddings=True,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                       fullatt_block_indexes=[7, 15, 23, 31], window_size=112, tokens_per_second=2),
        "vocab_size": 151936, "init_std": 0.02, "max_pixels": 12845056,
    },
    "7b": {  # Qwen/Qwen2.5-VL-7B-Instruct
        "text": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, max_position_embeddings=128000, tie_word_embeddings=False,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}),
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       fullatt_block_indexes=[7, 15, 23, 31], window_size=112, tokens_per_second=2),
        "vocab_size": 152064, "init_std": 0.02, "max_pixels": 12845056,
    },
}


def bpe_vocab(special_tokens: list[str], merges_budget: int, fill_to: int | None) -> tuple[dict, list]:
    """A byte-level BPE vocabulary: special tokens first, bytes, merges learnt from CORPUS, then
    filler tokens up to `fill_to` entries (so a full-size model's every output id decodes)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=256 + len(special_tokens) + merges_budget,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(CORPUS) * 4, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = dict(model["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    filler = 0
    while fill_to is not None and len(vocab) < fill_to:
        vocab.setdefault(f"\u0120w{filler}", len(vocab))
        filler += 1
    return vocab, merges


def save_random_florence2(
    directory: str | Path, preset: str = "tiny", seed: int = 0, device: str = "cpu", dtype: str = "float32"
) -> Path:
    """A Florence-2 checkpoint (model, BART tokenizer with `<image>`, CLIP image processor) with random weights."""
    from transformers import (
        BartConfig,
        BartTokenizer,
        CLIPImageProcessor,
        Florence2Config,
        Florence2ForConditionalGeneration,
        Florence2Processor,
    )

    spec = FLORENCE2_PRESETS[preset]
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    text_vocab = spec["vocab_size"] - 1 if spec["vocab_size"] else None  # the image token comes last
    vocab, merges = bpe_vocab(specials, merges_budget=600, fill_to=text_vocab)
    vocab.setdefault("<mask>", len(vocab))
    tokenizer = BartTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})
    side = spec["image_size"]
    tokens_per_side = side // 32  # DaViT's four stages stride 4, 2, 2, 2
    image_processor = CLIPImageProcessor(
        size={"height": side, "width": side}, crop_size={"height": side, "width": side},
        do_center_crop=False, image_seq_length=tokens_per_side * tokens_per_side + 1,
    )
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    text_config = BartConfig(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.bos_token_id, init_std=spec["init_std"], **spec["text"],
    )
    vision_config = dict(drop_path_rate=0.0, initializer_range=spec["init_std"], **spec["vision"])
    config = Florence2Config(
        text_config=text_config.to_dict(), vision_config=vision_config, image_token_id=tokenizer.image_token_id
    )
    return _save(directory, _build(Florence2ForConditionalGeneration, config, seed, device, dtype), processor)


def save_random_qwen2_5_vl(
    directory: str | Path, preset: str = "tiny", seed: int = 0, device: str = "cpu", dtype: str = "float32"
) -> Path:
    """A Qwen2.5-VL checkpoint (model, Qwen2 tokenizer, image and video processors, chat template),
    random weights."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2Tokenizer,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    spec = QWEN2_5_VL_PRESETS[preset]
    vocab, merges = bpe_vocab(list(QWEN_SPECIAL_TOKENS), merges_budget=600, fill_to=spec["vocab_size"])
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS),
    )
    ids = dict(zip(QWEN_SPECIAL_TOKENS, tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS)), strict=True))
    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=spec["max_pixels"])
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels), video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE,
    )
    text_config = dict(
        vocab_size=spec["vocab_size"] or len(tokenizer), initializer_range=spec["init_std"],
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        **spec["text"],
    )
    vision_config = dict(initializer_range=spec["init_std"], **spec["vision"])
    config = Qwen2_5_VLConfig(
        text_config=text_config, vision_config=vision_config, image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=spec["text"]["tie_word_embeddings"],
    )
    return _save(directory, _build(Qwen2_5_VLForConditionalGeneration, config, seed, device, dtype), processor)


def _build(model_class, config, seed: int, device: str, dtype: str):
    """The model with random weights, made directly on `device` in `dtype` (a 7B model never
    passes through host memory in float32)."""
    import torch

    torch.manual_seed(seed)
    with torch.device(device):
        return model_class._from_config(config, dtype=getattr(torch, dtype)).eval()


def _save(directory: str | Path, model, processor) -> Path:
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


SAVERS = {"florence2": save_random_florence2, "qwen2_5_vl": save_random_qwen2_5_vl}
