"""rag.settings: every environment variable is read in one place, and an explicit option
still wins over it."""
import re
from pathlib import Path

import pytest

from generator.base import GeneratorOptions, generator_keywords
from rag.settings import VARIABLES, Settings
from rag.types import InputError

REPO = Path(__file__).resolve().parents[1]
# process plumbing, not settings: the worker hands its environment to the child it starts,
# and open_clip keeps the hub offline (another concern, another module)
NOT_SETTINGS = {"generator/worker.py", "rag/encoders/open_clip.py", "rag/settings.py"}


def test_an_empty_environment_gives_the_defaults():
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.models_dir == Path.home() / ".cache" / "caselens" / "models"
    assert settings.translations == Path.home() / ".cache" / "caselens" / "translation_memory.sqlite"
    assert settings.threads is None and not settings.allow_download and settings.qdrant_url is None


def test_every_variable_fills_its_field(tmp_path):
    environ = {"CASELENS_MODELS": str(tmp_path / "m"), "CASELENS_TRANSLATIONS": str(tmp_path / "t"),
               "CASELENS_THREADS": "3", "CASELENS_LLM_EXTRA_BUFTS": "0",
               "CASELENS_VLM": "/models/vlm", "CASELENS_ALLOW_DOWNLOAD": "1",
               "CASELENS_QDRANT_URL": "http://db:6333", "CASELENS_QDRANT_API_KEY": "k",
               "CASELENS_API_KEY": "a"}
    assert set(environ) == set(VARIABLES.values())
    assert Settings.from_env(environ) == Settings(
        models_dir=tmp_path / "m", translations=tmp_path / "t", threads=3, llm_extra_bufts="0",
        vlm_model="/models/vlm", allow_download=True, qdrant_url="http://db:6333",
        qdrant_api_key="k", api_key="a")
    assert not Settings.from_env({"CASELENS_ALLOW_DOWNLOAD": "yes"}).allow_download  # "1" only
    assert Settings.from_env({"CASELENS_MODELS": ""}) == Settings()  # empty: the default


def test_a_bad_thread_count_names_the_variable():
    with pytest.raises(InputError, match="CASELENS_THREADS must be a positive whole number"):
        Settings.from_env({"CASELENS_THREADS": "many"})


def test_only_the_settings_module_reads_the_environment():
    readers = []
    for folder in ("rag", "generator", "indexers", "retrievers", "corpora"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            text = path.read_text(encoding="utf-8")
            if name not in NOT_SETTINGS and re.search(r"os\.environ|getenv\(", text):
                readers.append(name)
    assert readers == []


def test_the_environment_is_read_at_the_edges_only():
    """Settings.from_env() is called by the front ends (cli.py, the service, rag.pipeline's
    public functions), GeneratorOptions.from_env (for those edges), and a model worker's child
    process, which has no edge above it (generator.gguf.models_dir's fallback)."""
    edges = {"rag/pipeline.py", "rag/settings.py", "generator/base.py", "generator/gguf.py"}
    callers = []
    for folder in ("rag", "generator", "indexers", "retrievers", "corpora"):
        for path in sorted((REPO / folder).rglob("*.py")):
            name = path.relative_to(REPO).as_posix()
            if "from_env(" in path.read_text(encoding="utf-8") and name not in edges:
                callers.append(name)
    assert callers == []


def test_a_qdrant_server_comes_from_the_settings_below_the_options():
    assert Settings().backend_options("qdrant") == {}
    server = Settings(qdrant_url="http://db:6333", qdrant_api_key="k")
    assert server.backend_options("qdrant") == {"url": "http://db:6333", "api_key": "k"}
    assert Settings(qdrant_api_key="k").backend_options("qdrant") == {"api_key": "k"}
    assert server.backend_options("faiss") == {}


def test_each_generator_takes_the_options_it_uses(tmp_path):
    settings = Settings(models_dir=tmp_path, threads=2, llm_extra_bufts="1", vlm_model="env-vlm",
                        translations=tmp_path / "tm.sqlite")
    options = GeneratorOptions(llm_path=tmp_path / "m.gguf", max_tokens=50, max_seconds=9.0,
                               mllm="trained", settings=settings)
    assert generator_keywords("llm", options) == {
        "model_path": tmp_path / "m.gguf", "max_tokens": 50, "max_seconds": 9.0,
        "models_dir": tmp_path, "extra_bufts_setting": "1"}  # CASELENS_THREADS is the mllm's
    assert generator_keywords("auto", options)["user_memory"] == tmp_path / "tm.sqlite"
    assert generator_keywords("mllm", options) == {"model": "trained", "max_tokens": 50,
                                                   "max_seconds": 9.0, "threads": 2}
    assert generator_keywords("vlm", options) == {"model": "env-vlm", "max_new_tokens": 50,
                                                  "max_seconds": 9.0, "allow_download": False}
    assert generator_keywords("grounded", options) == {}
    with pytest.raises(InputError, match="unknown generator 'gpt'"):
        generator_keywords("gpt", options)


def test_an_explicit_option_wins_over_the_environment():
    from rag.pipeline import _generator_keywords

    settings = Settings(vlm_model="env-vlm")
    assert _generator_keywords("vlm", {"model": "given"}, settings)["model"] == "given"
    assert _generator_keywords("vlm", GeneratorOptions(vlm_path="given"), settings)["model"] == "given"
    assert _generator_keywords("vlm", None, settings)["model"] == "env-vlm"
    kept = GeneratorOptions(settings=Settings(vlm_model="chosen"))  # its own settings stay
    assert _generator_keywords("vlm", kept, settings)["model"] == "chosen"
