"""Jokes corpora -> "tell me a joke about {keyword}" examples, as the Chilean comedian persona was trained.

Input: JSONL with one joke per line, `{"joke": "...", "keywords": ["asado", "suegra"]}` (`text` instead of
`joke`, and keywords as a comma-separated string, work too), or a .txt file with jokes separated by blank lines.
Missing keywords are extracted: the words of 4+ letters that are not stopwords, ranked by how often they occur
in the joke, then by length, then by first appearance; the top two are kept."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from loopbot.trainer.importers.common import ImportFileError, ImportReport, open_text, read_jsonl, validation_split

PROMPTS = {"es": "Cuéntame un chiste sobre {keywords}", "en": "Tell me a joke about {keywords}"}
AND = {"es": " y ", "en": " and "}
STOPWORDS = set("""
a al algo algunas algunos ante antes aqui aquí asi así aunque bien cada casi como cómo con contra cual cuál cuando
cuándo de del desde donde dónde dos el él ella ellas ellos en entonces era eran eres es esa esas ese eso esos esta
está estaba estaban estamos están estar estas este esto estos estoy fue fueron ha había han hasta hay la las le les
lo los mas más me mi mí mis mucho muy nada ni no nos nosotros o otra otro para pero po poco por porque que qué quien
quién se sea ser si sí sido siempre sin sobre son su sus tambien también tan tanto te tenía tiene tienen todo todos
tu tú tus un una uno unos usted ustedes va vamos van ya yo dice dijo entonces oye cachai weón hueon huevón señor
señora
the a an and or but if then than that this these those there their they them he she it its his her you your we our
i me my of to in on at by for with from about as is are was were be been being have has had do does did not no so
what which who whom when where why how all any some just very can could would should will shall may might must
says said tell told asks asked one two into out over again because
""".split())  # noqa: SIM905
WORD_RE = re.compile(r"[^\W\d_]+")


def extract_keywords(joke: str, limit: int = 2) -> list[str]:
    """The documented keyword method (module docstring); [] when no word qualifies."""
    words = [w.lower() for w in WORD_RE.findall(joke)]
    candidates = [w for w in words if len(w) >= 4 and w not in STOPWORDS]
    counts = Counter(candidates)
    first = {w: i for i, w in reversed(list(enumerate(candidates)))}
    return sorted(counts, key=lambda w: (-counts[w], -len(w), first[w]))[:limit]


def joke_prompt(keywords: list[str], language: str = "es") -> str:
    lang = "es" if language.lower().startswith("es") else "en"
    if not keywords:
        return "Cuéntame un chiste" if lang == "es" else "Tell me a joke"
    return PROMPTS[lang].format(keywords=AND[lang].join(keywords[:2]))


def _records(p: Path):
    if p.suffix.lower() == ".txt":
        number = 1
        for block in re.split(r"\n\s*\n", open_text(p)):
            if block.strip():
                yield number, {"joke": block.strip()}
            number += block.count("\n") + 2
        return
    for number, obj in read_jsonl(p):
        text = obj.get("joke", obj.get("text"))
        if not isinstance(text, str):
            raise ImportFileError(f"{p}:{number}: expected {{\"joke\": text, \"keywords\": [...]}} "
                                  f"(or \"text\" instead of \"joke\")")
        keywords = obj.get("keywords", [])
        if isinstance(keywords, str):
            keywords = [k.strip() for k in keywords.split(",")]
        if not isinstance(keywords, list) or not all(isinstance(k, str) for k in keywords):
            raise ImportFileError(f"{p}:{number}: keywords must be a list of strings or a comma-separated string")
        yield number, {"joke": text, "keywords": [k.strip() for k in keywords if k.strip()]}


def import_jokes(path: str | Path, *, persona: str, language: str = "es", min_chars: int = 10,
                 validation_fraction: float = 0.1) -> tuple[ImportReport, list[tuple[str, str, dict]]]:
    p = Path(path)
    report = ImportReport("jokes", p, persona, unit="jokes")
    out = []
    for number, rec in _records(p):
        report.read += 1
        joke = rec["joke"].strip()
        if len(joke) < min_chars:
            report.drop("too_short", f"{p}:{number}: joke shorter than {min_chars} characters")
            continue
        keywords = rec.get("keywords") or extract_keywords(joke)
        split = validation_split(f"jokes:{joke}", validation_fraction)
        report.validation += split == "validation"
        out.append(("sft", split, {"messages": [{"role": "user", "content": joke_prompt(keywords, language)},
                                                {"role": "assistant", "content": joke}]}))
    report.kept = len(out)
    if report.read == 0:
        raise ImportFileError(f"{p}: no jokes found")
    return report, out
