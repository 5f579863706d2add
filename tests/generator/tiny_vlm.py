"""Tiny random-weight vision-language models saved to a folder, for tests that must never download.

Each builder trains a small byte-level BPE tokenizer on a little bilingual radiology text, adds
the special tokens its processor needs, builds the model from a config of a few thousand
parameters, and saves model + processor with `save_pretrained`, so the folder loads through
`AutoProcessor` / `AutoModelForImageTextToText` exactly as a real checkpoint would.
"""
from __future__ import annotations

from pathlib import Path

# a few hundred words of report text in both languages: enough for the BPE merges to be real
CORPUS = """
Findings: The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.
Ground glass opacity in the right lower lobe. Patchy consolidation in the left upper lobe.
Small left pleural effusion with basilar atelectasis. Mediastinal contours are unremarkable.
Impression: No acute cardiopulmonary disease. Viral pneumonia. Bilateral pulmonary nodules.
Reference cases retrieved for the new study, most similar first. Write the Findings and Impression
of the new study in English, citing the cases as [1] or [1][3]. similarity 0.91 chest xray ct mr.
影像表现：右肺下叶见磨玻璃影。左肺上叶斑片状实变影。心影大小正常。双肺纹理清晰。未见胸腔积液。
诊断意见：病毒性肺炎。双肺结节。未见明显急性心肺病变。纵隔结构未见异常。少量左侧胸腔积液。
""" * 4

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
LLAVA_SPECIAL = ["<s>", "</s>", "<unk>", "<pad>", "<image>"]

# the Qwen2-VL chat template, trimmed to what a single-image chat needs
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(special: list[str], vocab_size: int = 600, **named: str):
    """A PreTrainedTokenizerFast: byte-level BPE (any text round-trips, Chinese included) with
    `special` as its first ids; `named` maps roles (eos_token=...) to those tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


def _ids(tokenizer, names: list[str]) -> dict[str, int]:
    return {name: tokenizer.convert_tokens_to_ids(name) for name in names}


def build_qwen2_vl(folder: Path) -> Path:
    """A tiny Qwen2-VL (chat template included) saved under `folder`."""
    import torch
    from transformers import (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor,
                              Qwen2VLProcessor, Qwen2VLVideoProcessor)

    tokenizer = build_tokenizer(QWEN_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    ids = _ids(tokenizer, QWEN_SPECIAL)
    pixels = {"min_pixels": 28 * 28, "max_pixels": 56 * 56}  # at most 4 image tokens after merging
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=tokenizer, chat_template=QWEN_CHAT_TEMPLATE)
    config = Qwen2VLConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "max_position_embeddings": 4096,
                     # head_dim 16 -> 8 rotary frequencies split over (time, height, width)
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                         "mrope_section": [2, 3, 3]},
                     "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
                     "pad_token_id": ids["<|endoftext|>"]},
        vision_config={"depth": 1, "embed_dim": 32, "hidden_size": 64, "num_heads": 2,
                       "mlp_ratio": 2, "patch_size": 14, "spatial_merge_size": 2,
                       "temporal_patch_size": 2},
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )
    return _save(Qwen2VLForConditionalGeneration, config, processor, folder, ids["<|im_end|>"],
                 ids["<|endoftext|>"], torch)


def build_llava(folder: Path) -> Path:
    """A tiny LLaVA (CLIP vision tower, Llama text model) without a chat template: loading it
    exercises the plain "USER: <image> ... ASSISTANT:" prompt."""
    import torch
    from transformers import (CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration,
                              LlavaProcessor)

    tokenizer = build_tokenizer(LLAVA_SPECIAL, bos_token="<s>", eos_token="</s>",
                                unk_token="<unk>", pad_token="<pad>")
    ids = _ids(tokenizer, LLAVA_SPECIAL)
    image_size, patch = 32, 8  # 16 patches (+ CLS, dropped by the "default" feature strategy)
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": image_size},
                                           crop_size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer, patch_size=patch, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, image_token="<image>")
    config = LlavaConfig(
        vision_config={"model_type": "clip_vision_model", "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": patch, "projection_dim": 32},
        text_config={"model_type": "llama", "vocab_size": len(tokenizer), "hidden_size": 64,
                     "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 4,
                     "num_key_value_heads": 2, "max_position_embeddings": 4096,
                     "bos_token_id": ids["<s>"], "eos_token_id": ids["</s>"],
                     "pad_token_id": ids["<pad>"]},
        image_token_index=ids["<image>"], image_seq_length=(image_size // patch) ** 2,
        vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    return _save(LlavaForConditionalGeneration, config, processor, folder, ids["</s>"],
                 ids["<pad>"], torch)


def _save(model_class, config, processor, folder: Path, eos: int, pad: int, torch) -> Path:
    torch.manual_seed(0)
    model = model_class(config).eval()
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_qwen2_lm(folder: Path) -> Path:
    """A tiny text-only Qwen2 causal LM with the Qwen chat template: the MLLM's LLM in tests."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tokenizer(QWEN_SPECIAL, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    ids = _ids(tokenizer, ["<|im_end|>", "<|endoftext|>"])
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True)
    return _save(Qwen2ForCausalLM, config, tokenizer, folder, ids["<|im_end|>"],
                 ids["<|endoftext|>"], torch)
