"""Encoders: images and texts into one space (configs in model_configs/)."""
