"""Retrieval and report evaluation."""
