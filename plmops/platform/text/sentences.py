"""Sentence spans for the scripts of the corpus, in Python str character offsets [start, end).

One regex does the whole job, so long documents are split at C speed. Terminators:
- Chinese 。！？；… and Tibetan shad ། ༎ ༏ ༐ ༑, Mongolian ᠃ ᠉, Arabic-script ؟ ۔ end a sentence wherever
  they stand: these scripts put no space after them, and a Tibetan shad sits right after its syllable.
- Half-width ! ? end a sentence before whitespace, the end of the text or a CJK character (Chinese typed
  with ASCII marks); a half-width ; only before a CJK character, since in Latin text it joins clauses.
- A half-width "." needs whitespace or the end after it, so "3.14" and URLs stay whole. It does not end
  a sentence after a lone letter ("Г. Марченко", "1939 ж.") or before a lowercase Latin/Cyrillic word
  ("2,2 трлн. теңгеге"): initials and abbreviations. Titles such as "Mr." still split.
Closing quotes and brackets after a terminator stay with its sentence, and so does a shad set off by a
space after another (Tibetan "། །"). Whitespace between sentences belongs to no span, and a text with
no terminator is one sentence.
"""

from __future__ import annotations

import re
import unicodedata


def _letters(category: str) -> str:
    """Latin and Cyrillic letters of one Unicode category, as a regex class body."""
    return "".join(re.escape(chr(c)) for c in range(0x0530) if unicodedata.category(chr(c)) == category)


_CLOSERS = "\"'”’」』）)】》〉］\\]"
_SHAD = "\u0f0d-\u0f11"
_HARD = f"。！？；…{_SHAD}\u1803\u1809\u061f\u06d4"
_CJK = "\u3400-\u9fff\uf900-\ufaff"
_LOWER = _letters("Ll")
_LETTER = _letters("Lu") + _LOWER
_END = (
    rf"(?:[{_HARD}]+(?:[ \u00a0]+[{_SHAD}]+)*"
    rf"|[!?]+(?=[{_CLOSERS}]*(?:\s|\Z|[{_CJK}]))"
    rf"|;+(?=[{_CLOSERS}]*\s*[{_CJK}])"
    rf"|(?<!\s[{_LETTER}])(?<!^[{_LETTER}])\.+(?=[{_CLOSERS}]*(?:\Z|\s+(?![{_LOWER}]))))"
    rf"[{_CLOSERS}]*"
)
# A sentence: a terminator on its own, or a non-space character then the shortest stretch reaching a
# terminator or the last non-space character of the text.
_SENTENCE = re.compile(rf"{_END}|\S.*?(?:{_END}|(?=\s*\Z))", re.DOTALL)


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans of `text`: ordered, disjoint, covering every non-whitespace character."""
    if not isinstance(text, str):
        raise TypeError(f"split_sentences: expected str, got {type(text).__name__}")
    return [m.span() for m in _SENTENCE.finditer(text)]
