"""Guideline folders: Markdown, text, HTML and PDF into passages with heading paths."""
from corpora.base import open_corpus
from rag.types import Problem
from tests.fixtures.guideline_files import MARKDOWN, minimal_pdf


def test_guideline_folder_is_chunked_with_heading_paths(tmp_path):
    root = tmp_path / "guidance"
    root.mkdir()
    (root / "nodules.md").write_text(MARKDOWN, encoding="utf-8")
    (root / "effusion.txt").write_text("Pleural effusion. " * 200, encoding="utf-8")
    (root / "page.html").write_text(
        "<html><script>var x=1;</script><h1>Contrast</h1><p>Check renal function first.</p>"
        "<h2>Allergy</h2><p>Premedicate patients with prior reactions.</p></html>")
    (root / "fleischner.pdf").write_bytes(minimal_pdf("Nodules under 6 mm need no follow-up"))
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 garbage")
    corpus = open_corpus(root)
    assert corpus.formats == ["guidelines:."]
    items = list(corpus.read())
    records = [i for i in items if not isinstance(i, Problem)]
    problems = [i for i in items if isinstance(i, Problem)]
    by_file = {}
    for rec in records:
        assert rec.kind == "guideline" and rec.text
        by_file.setdefault(rec.meta["file"], []).append(rec)
    zh = [r for r in by_file["nodules.md"] if r.lang == "zh"]
    assert zh and zh[0].meta["headings"] == ["nodules", "Pulmonary nodules", "随访"]
    follow = next(r for r in by_file["nodules.md"] if "6 mm" in r.text)
    assert follow.meta["headings"][-1] == "Follow-up" and follow.lang == "en"
    assert len(by_file["effusion.txt"]) >= 3  # 3,600 characters in chunks of at most 1,000
    assert all(len(r.text) <= 1000 for r in by_file["effusion.txt"])
    html = by_file["page.html"]
    assert any(r.meta["headings"][-1] == "Allergy" for r in html)
    assert not any("var x" in r.text for r in html)
    pdf = by_file["fleischner.pdf"][0]
    assert "6 mm" in pdf.text and pdf.meta["headings"] == ["fleischner", "page 1"]
    assert [p.path for p in problems] == ["broken.pdf"]


def test_sidecar_reports_beside_images_are_not_guidelines(tmp_path):
    from tests.fixtures import image_files

    image_files.png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("Lungs clear.")
    assert open_corpus(tmp_path).formats == ["generic:."]
