"""Prompt templates (package data, one per language) rendered with StrictUndefined, so a
template that names a missing variable fails loudly instead of sending a hole to a model."""
from __future__ import annotations

from functools import cache
from pathlib import Path

from generator.evidence import Case
from generator.glossary import Term, prompt_terms

PROMPTS = Path(__file__).parent / "prompts"


@cache
def _template(lang: str, task: str = "report"):
    import jinja2

    path = PROMPTS / f"{task}_{lang}.j2"
    if not path.exists():
        known = ", ".join(sorted(p.stem.removeprefix(f"{task}_")
                                 for p in PROMPTS.glob(f"{task}_*.j2")))
        raise ValueError(f"no {task} prompt for language {lang!r}; available: {known}")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False,
                             trim_blocks=True, lstrip_blocks=True)
    return env.from_string(path.read_text(encoding="utf-8"))


def glossary_terms(cases: list[Case], lang: str, limit: int = 30) -> list[Term]:
    """The glossary entries the cases use, findings first: what a model writing `lang` from
    cases in another language must translate with (none when every case is in `lang`)."""
    if all(case.record.lang == lang for case in cases):
        return []
    terms = prompt_terms([case.text() for case in cases], limit=200)
    return sorted(terms, key=lambda t: t.kind not in ("finding", "device"))[:limit]


def render_prompt(lang: str, cases: list[Case], question: str | None = None,
                  has_image: bool = False, max_findings: int = 5,
                  max_impression: int = 2) -> tuple[str, str]:
    """(system, user) messages asking for a cited report in `lang` from the numbered cases."""
    text = _template(lang).render(
        cases=cases, question=question, has_image=has_image, max_findings=max_findings,
        max_impression=max_impression, terms=glossary_terms(cases, lang))
    system, _, user = text.partition("---user---")
    return system.strip(), user.strip()


def render_translation(lang: str, text: str, limit: int = 30) -> tuple[str, str]:
    """(system, user) messages asking to translate an English draft into `lang`, keeping its
    citation marks, with the glossary's translations of the terms the draft uses."""
    terms = prompt_terms([text], limit=200)
    terms = sorted(terms, key=lambda t: t.kind not in ("finding", "device"))[:limit]
    rendered = _template(lang, "translate").render(text=text, terms=terms)
    system, _, user = rendered.partition("---user---")
    return system.strip(), user.strip()


def clip_text(text: str, lang: str, words: int) -> str:
    """The first `words` words of a case (twice as many characters for Chinese), marked when cut."""
    if lang == "zh":
        return text if len(text) <= 2 * words else text[:2 * words] + "…"
    parts = text.split()
    return text if len(parts) <= words else " ".join(parts[:words]) + " …"


def render_mllm(lang: str, cases: list[tuple[int, str]], image_mark: str,
                question: str | None = None) -> str:
    """The MLLM's user message: the image mark, the numbered (already clipped) cases, the task."""
    return _template(lang, "mllm").render(cases=cases, image=image_mark, question=question).strip()
