"""Writes to an index are safe: one writer at a time, a swap cut in half is put back, an
index missing a piece is refused, and the small messages say what to do (issue 18, 7-10).

Failures are injected (a held lock, an os.replace that fails or kills its process), never
timed with sleeps."""
import filecmp
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from rag import manifest
from rag import pipeline
from indexers.base import needed_files
from rag.building import build_index, copy_index_folder
from rag.encoders.base import create_encoder
from rag.manifest import IndexBusy, IndexLock, ManifestError, read_manifest, swap_paths
from tests.fixtures.tiny_corpus import make_corpus

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One small index (both backends), built once; each test works on its own copy."""
    root = tmp_path_factory.mktemp("safety")
    corpus = make_corpus(root / "corpus", n_per_class=2)
    build_index(corpus, root / "index", create_encoder("tiny"), "tiny")
    return corpus, root / "index"


@pytest.fixture
def index(built, tmp_path):
    corpus, source = built
    copy_index_folder(source, tmp_path / "index")
    return corpus, tmp_path / "index"


def manifest_bytes(index_dir: Path) -> bytes:
    return (index_dir / "manifest.json").read_bytes()


def total(index_dir: Path) -> int:
    return sum(sum(d.values()) for d in read_manifest(index_dir)["counts"].values())


def disk_blocks(folder: Path) -> int:
    return sum(f.stat().st_blocks for f in folder.rglob("*") if f.is_file())


def test_an_index_copy_is_whole_and_stays_sparse(built, tmp_path):
    """Qdrant's shard files are mostly holes: a copy that wrote every zero took ~20x the disk
    (133 MB per copy of a 7 MB index) and filled CI's disk."""
    _, source = built
    copy_index_folder(source, tmp_path / "copy")
    files = sorted(f.relative_to(source) for f in source.rglob("*") if f.is_file())
    assert files == sorted(f.relative_to(tmp_path / "copy")
                           for f in (tmp_path / "copy").rglob("*") if f.is_file())
    assert all(filecmp.cmp(source / f, tmp_path / "copy" / f, shallow=False) for f in files)
    assert disk_blocks(tmp_path / "copy") <= 1.2 * disk_blocks(source) + 64
    with pipeline.open_index(tmp_path / "copy", backend="qdrant") as session:
        assert session.search(text="pleural effusion", k=3)


# -- 7. one writer at a time -------------------------------------------------------------------

def test_a_second_build_names_the_holder_and_changes_nothing(index):
    corpus, index_dir = index
    before = manifest_bytes(index_dir)
    with IndexLock(index_dir):
        with pytest.raises(IndexBusy, match=rf"being built by pid {os.getpid()} .*--wait"):
            build_index(corpus, index_dir, create_encoder("tiny"), "tiny", rebuild=True)
        with pytest.raises(IndexBusy, match=f"pid {os.getpid()}"):
            pipeline.delete(index_dir, filters={"lang": "zh"})
    assert manifest_bytes(index_dir) == before
    assert not swap_paths(index_dir)[0].exists()  # the holder's work folder was not touched
    summary = build_index(corpus, index_dir, create_encoder("tiny"), "tiny")
    assert summary.incremental and summary.changes["added"] == 0


def test_a_waiting_build_goes_on_once_the_holder_lets_go(index, monkeypatch):
    corpus, index_dir = index
    holder = IndexLock(index_dir).__enter__()
    pauses = []

    def release(seconds):  # the holder finishes while the second build waits
        pauses.append(seconds)
        holder.__exit__(None, None, None)

    monkeypatch.setattr(manifest, "_pause", release)
    summary = build_index(corpus, index_dir, create_encoder("tiny"), "tiny", wait=600)
    assert len(pauses) == 1 and summary.incremental


def test_the_wait_is_bounded(index):
    corpus, index_dir = index
    with IndexLock(index_dir):
        with pytest.raises(IndexBusy, match=r"waited 0\.05 s"):
            build_index(corpus, index_dir, create_encoder("tiny"), "tiny", wait=0.05)


def test_a_lock_held_by_another_process_names_it_and_dies_with_it(index):
    corpus, index_dir = index
    code = textwrap.dedent(f"""
        import sys
        from rag.manifest import IndexLock
        with IndexLock({str(index_dir)!r}):
            print("locked", flush=True)
            sys.stdin.read()
    """)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(IndexBusy, match=f"pid {child.pid} "):
            build_index(corpus, index_dir, create_encoder("tiny"), "tiny")
        result = runner.invoke(app, ["delete", "--source", "x", "--index", str(index_dir)])
        assert result.exit_code == 1 and f"pid {child.pid}" in result.stderr
    finally:
        child.kill()  # kill -9: the OS releases the flock
        child.wait()
    assert build_index(corpus, index_dir, create_encoder("tiny"), "tiny").incremental


def test_a_reader_during_a_first_build_is_told_it_is_being_built(tmp_path):
    with IndexLock(tmp_path / "fresh"):
        with pytest.raises(IndexBusy, match="being built by pid"):
            read_manifest(tmp_path / "fresh")


# -- 8. the swap window -----------------------------------------------------------------------

def fail_second_rename(monkeypatch, index_dir: Path):
    """os.replace fails when the new copy is to be renamed into place (the index itself has
    already gone to .old): the state a crash between the two renames leaves."""
    real = os.replace
    work, _ = swap_paths(index_dir)

    def replace(src, dst, *args, **kwargs):
        if Path(src) == work:
            raise OSError("power cut between the renames")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return real


def crash_a_delete_in_the_swap(monkeypatch, index_dir: Path) -> None:
    real = fail_second_rename(monkeypatch, index_dir)
    with pytest.raises(OSError, match="power cut"):
        pipeline.delete(index_dir, filters={"lang": "zh"})
    monkeypatch.setattr(os, "replace", real)
    work, old = swap_paths(index_dir)
    assert not index_dir.exists() and work.exists() and old.exists()


def test_opening_puts_the_finished_copy_in_place(index, monkeypatch):
    _, index_dir = index
    before = read_manifest(index_dir)
    crash_a_delete_in_the_swap(monkeypatch, index_dir)
    after = read_manifest(index_dir)  # recovers
    assert after["generation"] == before["generation"] + 1
    assert total(index_dir) < sum(sum(d.values()) for d in before["counts"].values())
    assert not any(p.exists() for p in swap_paths(index_dir))
    with pipeline.open_session(index_dir, generator="grounded") as session:
        assert session.search(text="胸腔积液", to="reports", k=5, lang="zh") == []


def test_opening_puts_the_old_index_back_when_the_copy_is_not_complete(index, monkeypatch):
    _, index_dir = index
    before = manifest_bytes(index_dir)
    crash_a_delete_in_the_swap(monkeypatch, index_dir)
    shutil.rmtree(swap_paths(index_dir)[0])
    with pipeline.open_session(index_dir, generator="grounded") as session:
        assert session.search(text="胸腔积液", to="reports", k=3, lang="zh")
    assert manifest_bytes(index_dir) == before


def test_the_next_build_recovers_before_it_clears_leftovers(index, monkeypatch):
    corpus, index_dir = index
    crash_a_delete_in_the_swap(monkeypatch, index_dir)
    summary = build_index(corpus, index_dir, create_encoder("tiny"), "tiny")
    # updated from the recovered (deleted) index, not rebuilt from nothing
    assert summary.incremental and summary.changes["added"] > 0
    assert summary.changes["unchanged"] > 0


def test_kill_9_between_the_renames_is_recovered(index):
    _, index_dir = index
    before = total(index_dir)
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from rag import pipeline
        work = Path({str(swap_paths(index_dir)[0])!r})
        real = os.replace
        def replace(src, dst, *args, **kwargs):
            if Path(src) == work:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(src, dst, *args, **kwargs)
        os.replace = replace
        pipeline.delete({str(index_dir)!r}, filters={{"lang": "zh"}})
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert not index_dir.exists()
    assert 0 < total(index_dir) < before  # the delete's finished copy, put in place


# -- 9. a missing piece is an error, not fewer hits -------------------------------------------

@pytest.mark.parametrize("piece", ["faiss", "faiss/report.index", "qdrant", "qdrant/image",
                                   "qdrant/edge.json", "records.sqlite"])
def test_an_index_missing_a_piece_is_refused_with_what_to_do(index, piece):
    _, index_dir = index
    path = index_dir / piece
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    openings = (lambda folder: read_manifest(folder, needed_files), pipeline.open_session,
                lambda folder: pipeline.delete(folder, ids=("x",)))
    for opening in openings:
        with pytest.raises(ManifestError, match=rf"incomplete: ({piece}|{piece}/) missing; rebuild.*--rebuild"):
            opening(index_dir)


def test_a_build_over_an_index_missing_a_piece_starts_from_scratch(index):
    corpus, index_dir = index
    before = total(index_dir)
    shutil.rmtree(index_dir / "faiss")
    summary = build_index(corpus, index_dir, create_encoder("tiny"), "tiny")
    assert not summary.incremental and total(index_dir) == before
    with pipeline.open_session(index_dir, generator="grounded") as session:
        assert session.search(text="pleural effusion", to="reports", k=3)


def test_every_write_advances_the_generation(index):
    corpus, index_dir = index
    first = read_manifest(index_dir)["generation"]
    build_index(corpus, index_dir, create_encoder("tiny"), "tiny")
    pipeline.delete(index_dir, filters={"lang": "zh"})
    assert read_manifest(index_dir)["generation"] == first + 2


# -- 10. small messages -----------------------------------------------------------------------

def test_a_missing_index_names_its_path_in_the_command(tmp_path):
    with pytest.raises(ManifestError) as err:
        read_manifest(tmp_path / "nowhere")
    assert f"--index {tmp_path / 'nowhere'}" in str(err.value) and "{" not in str(err.value)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", ""])
def test_a_corrupt_manifest_names_the_file_and_what_to_do(index, content):
    _, index_dir = index
    (index_dir / "manifest.json").write_text(content, encoding="utf-8")
    with pytest.raises(ManifestError, match=r"manifest .*manifest\.json .*--rebuild") as err:
        read_manifest(index_dir)
    assert str(index_dir / "manifest.json") in str(err.value)


@pytest.mark.parametrize("lang, filters", [("xx", {}), ("en", {"lang": "xx"})])
def test_an_unknown_language_is_an_error_not_no_hits(lang, filters):
    with pytest.raises(ValueError, match="unknown language 'xx'.*en or zh"):
        pipeline.make_query(None, "effusion", "reports", 5, lang, filters)


def test_search_with_an_unknown_language_fails_in_one_sentence(tmp_path):
    result = runner.invoke(app, ["search", "--text", "effusion", "--lang", "xx",
                                 "--index", str(tmp_path / "nowhere")])
    assert result.exit_code == 1 and "unknown language 'xx'" in result.stderr
