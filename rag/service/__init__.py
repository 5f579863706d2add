"""The HTTP API, its web page, and the LlamaIndex retriever."""
