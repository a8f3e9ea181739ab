"""Character-level clean-up of raw text before it enters a pretraining corpus.

Decisions, and why:

* Full-width ASCII (U+FF01-FF5E), the ideographic space U+3000 and the full-width signs U+FFE0-FFE6
  (￥ ￡ ...) become their half-width forms, so "ＢＥＲＴ，" and "BERT," tokenise alike.
* NFC, never NFKC: NFKC also rewrites compatibility characters that are real letters in our scripts
  (Tibetan U+0F77/U+0F79 become stacks, Arabic presentation forms lose their shapes, superscripts
  turn into digits). NFC only merges canonically equivalent spellings, e.g. yeh + hamza above
  (U+064A U+0654) into the ئ (U+0626) that Uyghur keyboards type.
* Tibetan is kept out of NFC as well. Seventeen precomposed Tibetan letters (བྷ U+0F57, ཀྵ U+0F69,
  the vowel signs U+0F73/0F75/0F81 ...) are composition exclusions: NFC splits them into two code
  points, so the same syllable would reach the tokenizer in a form its writers never typed.
* Removed: C0/C1 control characters (the ones that are whitespace become a space instead), DEL, and
  invisible format characters that carry no letter: ZWSP U+200B, word joiner U+2060, invisible
  operators U+2061-2064, BOM U+FEFF, soft hyphen U+00AD, and the bidi controls (LRM, RLM, ALM,
  embeddings, overrides, isolates), which steer display direction only.
* Kept: the Mongolian free variation selectors U+180B-180D/U+180F and the vowel separator U+180E
  (they pick letter shapes in traditional Mongolian), and ZWNJ/ZWJ (U+200C/U+200D) wherever they touch a
  character of a script that uses them to control joining or conjuncts: Arabic-script Uyghur and
  Kazakh, Syriac, N'Ko, Mongolian, Phags-pa, the Brahmic scripts of South and Southeast Asia
  including Tibetan, and emoji sequences. Between Han, Latin or other letters they are copy-paste
  debris that splits words and defeats deduplication, so there they are removed.
* Whitespace runs (anything str.isspace() accepts, NBSP and U+2028 included) collapse to one space;
  ends are stripped.

The result is idempotent: normalize_text(normalize_text(x)) == normalize_text(x).
"""
from __future__ import annotations

import functools
import re
import unicodedata

__all__ = ["normalize_text"]

_TABLE_SIZE = 0x10000  # every character the table changes lies in the BMP


def _build_table() -> list[int | None]:
    """A list indexed by code point: str.translate looks a list up about twice as fast as a dict.

    Code points past the BMP raise IndexError (a LookupError), which str.translate treats as
    "leave unchanged".
    """
    table: list[int | None] = list(range(_TABLE_SIZE))
    for cp in range(0xFF01, 0xFF5F):
        table[cp] = cp - 0xFEE0
    table[0x3000] = 0x20
    for full, half in zip(range(0xFFE0, 0xFFE7), (0xA2, 0xA3, 0xAC, 0xAF, 0xA6, 0xA5, 0x20A9)):
        table[full] = half
    removed = [cp for cp in [*range(0x20), *range(0x7F, 0xA0)] if not chr(cp).isspace()]
    removed += [0x00AD, 0x061C, 0x200B, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2060, 0x2065)]
    removed += [*range(0x2066, 0x206A), 0xFEFF]
    for cp in removed:
        table[cp] = None
    return table


_TABLE = _build_table()

# Scripts in which ZWNJ/ZWJ change how letters join or stack (see the module docstring).
_JOINING = (
    "\u0600-\u08ff"  # Arabic, Syriac, Arabic Supplement, Thaana, N'Ko, Samaritan, Mandaic, Arabic Ext
    "\u0900-\u0dff"  # Devanagari .. Sinhala
    "\u0f00-\u0fff"  # Tibetan
    "\u1000-\u109f"  # Myanmar
    "\u1780-\u18af"  # Khmer, Mongolian
    "\ua840-\ua87f"  # Phags-pa
    "\ufb50-\ufdff\ufe70-\ufefe"  # Arabic presentation forms
    "\u2600-\u27bf\ufe0f\U0001f000-\U0001faff"  # emoji and their presentation selector
)
_STRAY_JOINER = re.compile(f"(?<![{_JOINING}])[\u200c\u200d](?![{_JOINING}])")
_NOT_TIBETAN = re.compile("[^\u0f00-\u0fff]+")


def _nfc_except_tibetan(text: str) -> str:
    if unicodedata.is_normalized("NFC", text):
        return text
    return _NOT_TIBETAN.sub(lambda run: unicodedata.normalize("NFC", run.group()), text)


def _drop_stray_joiners(text: str) -> str:
    """Removing a joiner lets NFC reorder the marks around it, which can strand another: repeat."""
    while (kept := _nfc_except_tibetan(_STRAY_JOINER.sub("", text))) != text:
        text = kept
    return text


@functools.cache
def _t2s_converter():
    from opencc import OpenCC  # imported on first use: loading its dictionaries takes a while

    return OpenCC("t2s")


def normalize_text(text: str, *, to_simplified: bool = False) -> str:
    """Clean one document so equal text is spelled with equal code points.

    to_simplified converts Traditional to Simplified Chinese (OpenCC t2s). It is off by default
    because Cantonese and other Traditional-script corpora must stay as written.
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize_text expects str, got {type(text).__name__}")
    text = _nfc_except_tibetan(text.translate(_TABLE))
    if "\u200c" in text or "\u200d" in text:
        text = _drop_stray_joiners(text)
    text = " ".join(text.split())  # str.split() splits on Unicode whitespace, 4x faster than a regex
    if to_simplified:
        text = _t2s_converter().convert(text)
    return text
