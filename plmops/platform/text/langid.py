"""Language identification for corpus ingestion, by script and marker characters.

No model: the languages we ingest are told apart by what they write with. First the script that
carries most of the text picks a family; then a family rule picks the language from marker letters
and a handful of very frequent function words. The rules are listed in docs/langid.md.

The score is a confidence in [0, 1]: the share of the text's (weighted) letters that are in the
winning script, times the smoothed share of the family rule's evidence that points at the answer,
(winner + 1) / (all evidence + number of candidates). "zh" with no evidence either way scores 0.5.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["LANGUAGES", "identify_language", "identify_languages"]

LANGUAGES = ("zh", "yue", "bo", "mn", "ug", "kk", "za", "ko", "en", "other")

NEUTRAL, HAN, HANGUL, KANA, TIBETAN, MONGOLIAN, ARABIC, CYRILLIC, LATIN, OTHER = range(10)
_N_SCRIPTS = 10
# One Han/Hangul/Kana character carries about as much as three alphabetic letters. Latin counts half:
# names, units, URLs and code show up in Latin inside every other script, rarely the other way round.
_WEIGHTS = np.array([0, 3, 3, 3, 1, 1, 1, 1, 0.5, 1])
# Kana is counted with Han: Japanese is written in both, and the Han rule tells it from Chinese.
_FAMILY = np.eye(_N_SCRIPTS)[[NEUTRAL, HAN, HANGUL, HAN, TIBETAN, MONGOLIAN, ARABIC, CYRILLIC, LATIN, OTHER]]
_CHUNK = 1024  # texts per vectorised pass, which holds ~20 bytes per character

_SCRIPT_RANGES = {
    HAN: [(0x3005, 0x3007), (0x3021, 0x3029), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF),
          (0x20000, 0x323AF)],
    HANGUL: [(0x1100, 0x11FF), (0x3130, 0x318F), (0xA960, 0xA97F), (0xAC00, 0xD7FF)],
    KANA: [(0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F)],
    TIBETAN: [(0x0F00, 0x0FFF)],
    MONGOLIAN: [(0x1800, 0x18AF)],
    ARABIC: [(0x0600, 0x06FF), (0x0750, 0x077F), (0x0870, 0x08FF), (0xFB50, 0xFDFF), (0xFE70, 0xFEFE)],
    CYRILLIC: [(0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F)],
    LATIN: [(0x0041, 0x024F), (0x1E00, 0x1EFF), (0x2C60, 0x2C7F), (0xA720, 0xA7FF), (0xFF21, 0xFF5A)],
}
_TABLE_SIZE = 0x323B1  # up to CJK Extension H; the last entry (NEUTRAL) stands for everything above


def _build_script_table() -> np.ndarray:
    """Script of every code point; only letters and marks count, digits and punctuation are NEUTRAL."""
    is_letter = np.array([unicodedata.category(chr(cp))[0] in "LM" for cp in range(_TABLE_SIZE)])
    table = np.where(is_letter, OTHER, NEUTRAL).astype(np.uint8)
    table[0x0300:0x0370] = NEUTRAL  # combining diacritics belong to whatever letter they sit on
    for script, ranges in _SCRIPT_RANGES.items():
        for start, end in ranges:
            span = slice(start, end + 1)
            table[span] = np.where(is_letter[span], script, NEUTRAL)
    table[-1] = NEUTRAL
    return table


_SCRIPT_TABLE = _build_script_table()


def _script_counts(texts: Sequence[str]) -> np.ndarray:
    """Letters per script for every text, shape (len(texts), _N_SCRIPTS), in one vectorised pass."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    code_points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype="<u4")
    scripts = _SCRIPT_TABLE[np.minimum(code_points, _TABLE_SIZE - 1)]
    doc = np.repeat(np.arange(len(texts)), lengths)
    flat = np.bincount(doc * _N_SCRIPTS + scripts, minlength=len(texts) * _N_SCRIPTS)
    return flat.reshape(len(texts), _N_SCRIPTS)


def _count(pattern: re.Pattern[str], text: str) -> int:
    return len(pattern.findall(text))


def _pick(evidence: dict[str, float]) -> tuple[str, float]:
    """The language with most evidence (first listed wins ties) and its smoothed evidence share."""
    best = max(evidence, key=evidence.__getitem__)
    return best, (evidence[best] + 1) / (sum(evidence.values()) + len(evidence))


_WORD = re.compile(r"[^\W\d_]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


# --- Han: Cantonese versus Mandarin ---------------------------------------------------------------
# Written Cantonese replaces Mandarin's grammatical words with its own: 嘅/的, 咗/了, 係/是, 喺/在,
# 佢/他, 哋/们, 呢個/这个, 嗰/那, 冇/没, 唔/不, 睇/看, 畀/给, 食/吃, 乜嘢/什么 ..., and ends sentences with
# its own particles (㗎 喎 噃 啩 嘞 囉 喇 ...). Each side's words are evidence for it. A character that
# Mandarin writes too counts only in its Cantonese use, told apart by its neighbours. Traditional
# characters as such are no evidence: Taiwan and Hong Kong write Mandarin in them too. Simplified
# spellings are listed beside the traditional ones, for Cantonese written in simplified characters.
_YUE_RULES = (
    # characters only Cantonese writes: grammatical words and particles; colloquial verbs and nouns
    "[嘅咗唔喺哋冇嘢啲嚟佢噉乜咩嗰畀俾咁啱㗎喎噃啩囖啫吖嗱吔]",
    "[睇攞搵揾嚿瞓諗攰嬲嘥餸冚嗌㩒撳揼孭乸揸冧唞啋躝𡃁𨋢]",
    "係(?<!關係)(?![數数統统指屬属])",  # "is"; not 關係 "relation", nor Taiwan's 係數/係指
    "喇(?![叭嘛])",  # particle; not 喇叭 "horn", 喇嘛 "lama"
    "呢(?=[個个度啲排位次間间種种條条隻只])",  # "this" before a classifier, not the question particle
    "未(?=[呀啊嗎吗?？])",  # 好未呀？ "ready yet?"
    "蚊(?<=[一二三四五六七八九十百千兩两幾几0-9]蚊)",  # "dollar" after a numeral
    # aspect and order: 先 "first" closing a clause (等陣先; not 首先/祖先, nor "你先。"), completive
    # 晒 before a particle (阻住晒啦; not 晒太阳), progressive 緊 after a verb (做緊; not 緊張/要緊/抓緊)
    ("先(?<![首原事預预優优領领率最祖搶抢早當当爭争佔占起為爲为在你您我他她]先)"
     "(?=[啦啊呀喇嘞喎,.!?。，！？]|$)"),
    "晒(?=[啦喇嘞囉咯嘅㗎喎,.!?。，！？]|$)",
    ("[緊紧](?<=[做問问講讲食等玩寫写讀读住搞傾倾聽听學学返煮搵揾睇諗瞓飲饮買买][緊紧])"
     "(?![張张急密迫湊凑縮缩跟隨随靠要接鄰邻扣繃绷])"),
    "吓(?=[?？])",  # the "hah?" tag; 吓 "frighten" is never followed by a question mark
    "咋(?=[啦喎呀,.!?。，！？]|$)",  # final "only"; northern 咋 "how" comes before its verb
    "仲(?<!伯仲)(?=[未有係要喺唔嘈])",  # "still, also"; not in names or 仲裁
    "食(?=[飯饭嘢晏藥药煙烟咗緊紧晒埋先啦呀粥麵蛋雪早晚午宵])(?!藥[監监署局]|麵包|蛋白)",  # "eat"; not 食物
    # "how", opening a clause
    "[點点](?<![^\\s,.!?。，！？你我佢又咁][點点])(?=[會会算解樣样講讲做分知搞去呀啊唧])",
    "[點点]解(?![析決决釋释答讀读說说])",  # "why"; not 難點解析 "difficulties explained"
    "[點点][樣样](?<!有[點点][樣样])(?![子品本])",  # "how"; not 有點樣子
    # "all day"; not 組成日本, 養成日誌
    "成日(?<![組组形變变完建造養养譯译翻製制合達达化當当落生]成日)(?![本語语文軍军式元圓圆誌志記记期])",
    "有排(?=[都未啦呀喇,.!?。，！？]|$)",  # "it takes ages"; not 有排序/有排放
    "揀(?<![分挑撿捡]揀)(?![選选起擇择貨货出])",  # "choose"; not 分揀 "sort", 揀選
    "[試试]下(?<![嘗尝測测考][試试]下)(?![載载])",  # "have a try"; not 嘗試下載
    "[邊边]有(?<![^\\s,.!?。，！？][邊边]有)",  # "how could there be", opening a clause; not 身邊有
    "[聽听]日(?![語语報报本文劇剧])",  # "tomorrow"; not 聽日語 "listen to Japanese"
    "返(?=[學学嚟去])",  # "go back (to school)"
    "嘈(?<![吐嘈]嘈)(?![雜杂嘈])",  # "noisy"; not 嘈雜
)
# Colloquial words; their Mandarin counterparts are 哪個/哪裡, 多少, 昨天, 現在, 家, 等一會, 待會, 害怕,
# 坐下, 蹲下, 揍, 聊天, 搞定, 喜歡, 爺爺/奶奶, 爸爸, 小孩. 鍾意 "like" counts in traditional characters
# only: mainland ad copy borrows 钟意.
_YUE_WORDS = (
    "[邊边][個个度]", "[幾几]多", "[尋寻]日", "琴日", "而家", "依家", "屋企", "等[陣阵](?![地營营容線线列型])",
    "[陣阵][間间]", "[驚惊]做", "坐低", "踎低", "打[鑊镬]", "[傾倾][偈計计]", "搞掂", "鍾意", "邊間",
    "阿[爺爷嫲]", "老[豆竇窦]", "[細细]路",
)


def _literal_first(rule: str) -> list[str]:
    """One branch per character of a rule's opening [class]: re finds the places to try a pattern
    whose every branch opens with a plain character by that character alone, 7x faster here."""
    if not rule.startswith("["):
        return [rule]
    chars, rest = rule[1:].split("]", 1)
    return [char + rest for char in chars]


_YUE_MARKERS = re.compile("|".join(branch for rule in (*_YUE_RULES, *_YUE_WORDS)
                                    for branch in _literal_first(rule)))
# Mandarin uses these too, only less often (Taiwan's 出發囉, northern 好嘞, literary 好似): half a marker
# each, so one alone is never enough. The particles count closing a clause after a word, not in
# the interjections 哎呀, 嘩啦, 哈囉.
_YUE_WEAK = re.compile("[呀啦嘞囉](?<![\\s,.!?。，！？哎唉哇嘩哦哈呀啦嘞囉][呀啦嘞囉])(?=[\\s,.!?。，！？~⋯…]|$)|好似")
# The Mandarin words Cantonese replaces (simplified and traditional): 的 了 是 在 他 ..., and 吃/食,
# 喝/飲, 怎/點, 哪/邊, 誰/邊個, 吧/啩, 咱, 啥.
_MANDARIN_MARKERS = re.compile("[的了是在他她它们們这這那没沒不看给給吗嗎么麼说說吃喫喝怎哪誰谁吧咱啥]")


def _resolve_han(text: str, counts: list[int]) -> tuple[str, float]:
    kana = counts[KANA]
    # Japanese writes a quarter or more of its characters in kana; Chinese only quotes a few names.
    if kana >= max(2, 0.25 * (counts[HAN] + kana)):
        return "other", (kana + 1) / (kana + 2)
    yue = _count(_YUE_MARKERS, text) + 0.5 * _count(_YUE_WEAK, text)
    zh = _count(_MANDARIN_MARKERS, text)
    if yue < 1:  # less than one full marker is no case for Cantonese
        return "zh", (zh + 1) / (zh + yue + 2)
    return _pick({"zh": zh, "yue": yue})


# --- Cyrillic: Kazakh, Mongolian, or another language (Russian, Ukrainian ...) --------------------
# Kazakh letters ә ғ қ ң ұ һ і are absent from Mongolian (і is also Ukrainian/Belarusian, so it does
# not count when ї є ґ ў are there). Mongolian writes э and doubled long vowels (аа ээ оо уу өө үү) in
# almost every sentence; Kazakh has э only in Russian loans and no long vowels. ө and ү belong to both
# and count for both. With no evidence at all the answer is "other"; on a tie Kazakh wins over
# Mongolian, because a Mongolian sentence without э or a long vowel is rare.
_KK_LETTERS = re.compile("[әғқңұһӘҒҚҢҰҺ]")
_KK_I = re.compile("[іІ]")
_UK_BE_LETTERS = re.compile("[їєґўЇЄҐЎ]")
_SHARED_LETTERS = re.compile("[өүӨҮ]")
_MN_LETTERS = re.compile("э|аа|ээ|оо|уу|өө|үү", re.IGNORECASE)
_KK_WORDS = frozenset("мен бен пен деп еді екен осы ол сол бар жоқ бір бұл үшін және ғой жыл".split())
_MN_WORDS = frozenset("нь юм байна байгаа байсан бол гэж гэсэн гэх энэ тэр тэрээр ба болон аж мөн бид"
                      .split())
_SLAVIC_WORDS = frozenset("и в что это как она они но из от по на для его все так же мы вы уже было был "
                          "была при или только та що це як від".split())


def _resolve_cyrillic(text: str, counts: list[int]) -> tuple[str, float]:
    words = _words(text)
    slavic_letters = _count(_UK_BE_LETTERS, text)
    kk_letters = _count(_KK_LETTERS, text) + (0 if slavic_letters else _count(_KK_I, text))
    shared = _count(_SHARED_LETTERS, text)
    return _pick({
        "other": 2 * slavic_letters + 2 * sum(w in _SLAVIC_WORDS for w in words),
        "kk": shared + 2 * kk_letters + 2 * sum(w in _KK_WORDS for w in words),
        "mn": shared + _count(_MN_LETTERS, text) + 2 * sum(w in _MN_WORDS for w in words),
    })


# --- Arabic script: Uyghur, Arabic-script Kazakh, or Arabic/Persian/Urdu ... ----------------------
# Turkic letters Arabic never writes: ۇ ە ڭ ۋ ۆ ې ۈ, and ى inside a word (Arabic writes it word-finally).
# Uyghur spells vowel-initial syllables with ئ and has ې ۈ; Kazakh uses the high hamza ٴ (and ٵ ٶ ٷ ٸ).
# Persian, Urdu, Pashto, Sorani and Arabic have letters Uyghur/Kazakh spelling does not use.
_TURKIC_LETTERS = re.compile("[ۇەڭۋۆېۈ]|ى(?=[\u0621-\u064a\u0671-\u06d3\u06d5])")
_UG_LETTERS = re.compile("[ئېۈ]")
_KK_ARABIC_LETTERS = re.compile("[\u0674-\u0678]")
_NON_TURKIC_LETTERS = re.compile("[یکےہةڕڵێۍښټډړ]")


def _resolve_arabic(text: str, counts: list[int]) -> tuple[str, float]:
    turkic, other = _count(_TURKIC_LETTERS, text), _count(_NON_TURKIC_LETTERS, text)
    share = (max(turkic, other) + 1) / (turkic + other + 2)
    if turkic <= other:
        return "other", share
    lang, _ = _pick({"ug": _count(_UG_LETTERS, text), "kk": _count(_KK_ARABIC_LETTERS, text)})
    return lang, share


# --- Latin: Zhuang, English, or another language --------------------------------------------------
# Standard Zhuang ends syllables in the tone letters z j x q h; English is half function words.
_ZHUANG_SYLLABLE_END = re.compile(r"[aeiouw](?:ng|[mnbdg])?[zjxqh]$")
_ZA_WORDS = frozenset("gij youq caeuq ndaej miz vunz dwg mbouj ndeu de gou mwngz raeuz aen boux ndaw bae "
                      "daeuj hawj guh rox lai hix couh baenz bouxcuengh sawcuengh vahcuengh".split())
_EN_WORDS = frozenset("the of and to in a is that for it as was with be by on not he i this are or his "
                      "from at which but have an they you were her she there one all we their has been "
                      "would will can if no so what when who more its than also into only other".split())
_MIN_SHARE = {"en": 0.15, "za": 0.3}  # of all words; below both, the text is some other language


def _resolve_latin(text: str, counts: list[int]) -> tuple[str, float]:
    words = _words(text)
    if not words:
        return "other", 0.5
    evidence = {
        "za": sum(w in _ZA_WORDS or _ZHUANG_SYLLABLE_END.search(w) is not None for w in words),
        "en": sum(w in _EN_WORDS for w in words),
        "other": sum(not w.isascii() for w in words),
    }
    lang, share = _pick(evidence)
    if lang == "other" or evidence[lang] < _MIN_SHARE[lang] * len(words):
        unclaimed = len(words) - evidence["za"] - evidence["en"]
        return "other", (unclaimed + 1) / (len(words) + 2)
    return lang, share


def _fixed(lang: str) -> Callable[[str, list[int]], tuple[str, float]]:
    return lambda text, counts: (lang, 1.0)


_RESOLVERS: dict[int, Callable[[str, list[int]], tuple[str, float]]] = {
    NEUTRAL: _fixed("other"),  # no letters at all; its share, and so its score, is 0
    HAN: _resolve_han,
    HANGUL: _fixed("ko"),
    TIBETAN: _fixed("bo"),
    MONGOLIAN: _fixed("mn"),  # traditional script; also Manchu and Sibe, which share the block
    ARABIC: _resolve_arabic,
    CYRILLIC: _resolve_cyrillic,
    LATIN: _resolve_latin,
    OTHER: _fixed("other"),
}


def _identify_chunk(texts: Sequence[str]) -> list[tuple[str, float]]:
    counts = _script_counts(texts)
    weighted = (counts * _WEIGHTS) @ _FAMILY  # letters per script family
    families = weighted.argmax(axis=1)
    totals = weighted.sum(axis=1)
    shares = np.divide(weighted[np.arange(len(texts)), families], totals, out=np.zeros(len(texts)),
                       where=totals > 0)
    results = []
    for text, row, family, share in zip(texts, counts.tolist(), families.tolist(), shares.tolist()):
        lang, evidence_share = _RESOLVERS[family](text, row)
        results.append((lang, share * evidence_share))
    return results


def identify_languages(texts: Sequence[str]) -> list[tuple[str, float]]:
    """(language, confidence) for each text; counts scripts for the whole batch at once."""
    if isinstance(texts, str):
        raise TypeError("identify_languages expects a sequence of str, got one str; use identify_language")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"identify_languages: texts[{i}] is {type(text).__name__}, expected str")
    return [result for start in range(0, len(texts), _CHUNK)
            for result in _identify_chunk(texts[start:start + _CHUNK])]


def identify_language(text: str) -> tuple[str, float]:
    """(language, confidence) for one text; language is one of LANGUAGES."""
    if not isinstance(text, str):
        raise TypeError(f"identify_language expects str, got {type(text).__name__}")
    return identify_languages([text])[0]
