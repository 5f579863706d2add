"""Our MLLM: a Qwen2.5 0.5B with an image projector and LoRA."""
