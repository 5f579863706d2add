"""caselens core. The Python API: `from rag import open_index`, then
`index.search(image=..., text=..., to="reports", k=5)` and `index.ask(image=..., lang="zh")`."""


def __getattr__(name: str):
    # lazy, so that `import rag.types` does not load torch, FAISS and Qdrant
    if name == "open_index":
        from rag.pipeline import open_index

        return open_index
    raise AttributeError(f"module 'rag' has no attribute {name!r}")
