"""Training the encoder's heads and the MLLM."""
