"""Plate text rules: normalisation, country formats, look-alike fixes and choosing the best read.

Two ways to use a format:

* on a finished string (`PlateFormat.fix`, `choose_best`): look-alike characters are swapped only at
  positions where the format demands the other class (a `0` where a letter must be becomes `O`);
  works with any OCR backend;
* on the CTC posterior of a recogniser (`decode_ctc`): the best string that fits each format is
  searched directly in the per-frame probabilities, so a format can also pick a character the
  greedy read ranked second, and glyphs that are not plate characters (country band, coat of arms,
  round stickers) can be skipped at a cost.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
ALPHABET = LETTERS + DIGITS  # index order used by the CTC decoder below
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_CLASSES = {"L": frozenset(LETTERS), "D": frozenset(DIGITS), "A": frozenset(ALPHABET)}

# Characters that plate fonts draw almost alike, with the weight given to "the OCR saw X, the format
# wants Y". Primary pairs are near-identical glyphs; secondary ones are merely similar.
PRIMARY_WEIGHT = 0.2
SECONDARY_WEIGHT = 0.05
LOOKALIKES: tuple[tuple[str, str, float], ...] = (
    ("O", "0", PRIMARY_WEIGHT),
    ("I", "1", PRIMARY_WEIGHT),
    ("Z", "2", PRIMARY_WEIGHT),
    ("S", "5", PRIMARY_WEIGHT),
    ("B", "8", PRIMARY_WEIGHT),
    ("G", "6", PRIMARY_WEIGHT),
    ("Q", "0", SECONDARY_WEIGHT),
    ("D", "0", SECONDARY_WEIGHT),
    ("A", "4", SECONDARY_WEIGHT),
)


def normalize(text: str | None) -> str:
    """Upper-case A-Z0-9 only (full-width and other compatibility forms folded first)."""
    if not text:
        return ""
    folded = unicodedata.normalize("NFKC", text).upper()
    return "".join(c for c in folded if c in _INDEX)


def symbol_groups(symbols: Sequence[str]) -> list[list[int]]:
    """For each ALPHABET char, the indices of a model's symbols that fold to it (case, full-width)."""
    groups: list[list[int]] = [[] for _ in ALPHABET]
    for i, sym in enumerate(symbols):
        if sym == "l":  # a lower-case L is drawn like I or 1, not like L: leave it out
            continue
        folded = normalize(sym) if len(sym) == 1 else ""
        if len(folded) == 1:
            groups[_INDEX[folded]].append(i)
    return groups


def _lookalike_table() -> dict[str, list[tuple[str, float]]]:
    table: dict[str, list[tuple[str, float]]] = {c: [] for c in ALPHABET}
    for a, b, w in LOOKALIKES:
        table[a].append((b, w))
        table[b].append((a, w))
    for options in table.values():
        options.sort(key=lambda o: -o[1])
    return table


_LOOKALIKE = _lookalike_table()

_TOKEN = re.compile(r"(L|D|A|\[[A-Z0-9]+\])(?:\{(\d+)(?:,(\d+))?\})?")


def _parse_alternative(pattern: str, whole: str) -> list[tuple[frozenset[str], int, int]]:
    pos, out = 0, []
    while pos < len(pattern):
        m = _TOKEN.match(pattern, pos)
        if not m:
            raise ValueError(f"bad plate pattern {whole!r} at {pattern[pos:]!r}")
        cls, lo, hi = m.groups()
        chars = _CLASSES[cls] if cls in _CLASSES else frozenset(cls[1:-1])
        n_lo = int(lo) if lo else 1
        n_hi = int(hi) if hi else n_lo
        if n_hi < n_lo:
            raise ValueError(f"bad repeat in plate pattern {whole!r}")
        out.append((chars, n_lo, n_hi))
        pos = m.end()
    if not out:
        raise ValueError(f"empty alternative in plate pattern {whole!r}")
    return out


def _parse_pattern(pattern: str) -> list[list[tuple[frozenset[str], int, int]]]:
    compact = pattern.replace(" ", "")
    return [_parse_alternative(alt, pattern) for alt in compact.split("|")]


Template = tuple[frozenset[str], ...]


@dataclass(frozen=True)
class PlateFormat:
    """A country format as a pattern of character classes.

    `L` letter, `D` digit, `A` either, `[EH]` an explicit set; each may take `{n}` or `{m,n}`;
    `|` separates alternatives. E.g. UK `LLDDLLL`, Germany `L{1,3} L{1,2} D{1,4}`.

    Scoring follows the size principle: a string's prior is `weight / (number of templates x number
    of strings its template allows)`, so a strict format that fits beats a permissive one and the
    generic fallback only wins when no real format fits at a reasonable cost. `weight` is how
    common the format is where the camera stands (1.0 = no preference).
    """

    name: str
    pattern: str
    weight: float = 1.0

    @cached_property
    def templates(self) -> tuple[Template, ...]:
        """Every fixed-length expansion of the pattern, one allowed-set per position."""
        seen, out = set(), []
        for parts in _parse_pattern(self.pattern):
            options = [[(chars,) * n for n in range(lo, hi + 1)] for chars, lo, hi in parts]
            for combo in itertools.product(*options):
                t = tuple(itertools.chain.from_iterable(combo))
                if t and t not in seen:
                    seen.add(t)
                    out.append(t)
        return tuple(out)

    @cached_property
    def log_priors(self) -> tuple[float, ...]:
        """Log prior of one particular string under each template (see class docstring)."""
        base = float(np.log(self.weight) - np.log(len(self.templates)))
        return tuple(base - float(sum(np.log(len(c)) for c in t)) for t in self.templates)

    @cached_property
    def regex(self) -> re.Pattern[str]:
        def cls(chars: frozenset[str]) -> str:
            return "[" + "".join(sorted(chars)) + "]"

        alts = [
            "".join(f"{cls(c)}{{{lo},{hi}}}" for c, lo, hi in parts) for parts in _parse_pattern(self.pattern)
        ]
        return re.compile("^(?:" + "|".join(alts) + ")$")

    def matches(self, text: str) -> bool:
        return bool(self.regex.match(text))

    def fix(self, text: str) -> tuple[str, float] | None:
        """Best look-alike repair of `text` into this format: (fixed text, log score), or None.

        Characters are only changed where the format excludes them (a digit in a letter slot); the
        score is the string's log prior plus the log weight of every swap made."""
        best: tuple[str, float] | None = None
        for template, prior in zip(self.templates, self.log_priors, strict=True):
            if len(template) != len(text):
                continue
            out, score = [], prior
            for ch, allowed in zip(text, template, strict=True):
                if ch in allowed:
                    out.append(ch)
                    continue
                swap = next(((alt, w) for alt, w in _LOOKALIKE[ch] if alt in allowed), None)
                if swap is None:
                    break
                out.append(swap[0])
                score += float(np.log(swap[1]))
            else:
                if best is None or score > best[1]:
                    best = ("".join(out), score)
        return best


GENERIC = PlateFormat("generic", "A{4,8}")

# Real formats, written from the countries' registration rules (not from any evaluation set).
# Several countries share a shape (FR, IT and SK all use LLDDDLL); the first name that fits is
# reported. Weights of the EU set are rough shares of the EU+UK passenger-car fleet (millions of
# cars, public statistics, relative to the largest shape), so that when a read is ambiguous between
# two countries' shapes the more common one wins. A deployment should list its own country first
# with weight 1 (or use only its formats).
KNOWN_FORMATS: dict[str, PlateFormat] = {
    f.name: f
    for f in (
        PlateFormat("FR/IT/SK", "LLDDDLL", weight=1.0),  # FR 39 + IT 40 + SK 2.5
        PlateFormat("DE", "L{1,3} L{1,2} D{1,4} [EH]{0,1}", weight=0.6),  # 49
        PlateFormat("UK", "LLDDLLL", weight=0.4),  # 33
        PlateFormat("PL", "LL DDDDD | LL DDDDL | LL DDDLL | LL DLDDD | LL DLLDD", weight=0.3),  # 26
        PlateFormat("ES", "DDDD LLL", weight=0.3),  # 25
        PlateFormat("RO", "L{1,2} D{2,3} LLL", weight=0.1),  # 8
        PlateFormat("CZ", "D L A DDDD", weight=0.08),  # 6
        PlateFormat("BE", "D LLL DDD", weight=0.07),  # 6
        PlateFormat("HR", "LL D{3,4} L{1,2}", weight=0.02),  # 1.8
        PlateFormat("BR", "LLL DDDD"),
        PlateFormat("BR-Mercosul", "LLL D L DD"),
        GENERIC,
    )
}

FORMAT_SETS: dict[str, tuple[str, ...]] = {
    "eu": ("FR/IT/SK", "DE", "UK", "PL", "ES", "RO", "CZ", "BE", "HR", "generic"),
    "uk": ("UK", "generic"),
    "br": ("BR", "BR-Mercosul", "generic"),
    "all": tuple(KNOWN_FORMATS),
    "generic": ("generic",),
}


def get_formats(spec: str | Sequence[str | PlateFormat] = "eu") -> tuple[PlateFormat, ...]:
    """Formats from a set name (`eu`, `uk`, `br`, `all`), a comma list of names, or objects."""
    if isinstance(spec, str):
        names: Sequence[str | PlateFormat] = (
            FORMAT_SETS[spec] if spec in FORMAT_SETS else [s.strip() for s in spec.split(",") if s.strip()]
        )
    else:
        names = spec
    out = []
    for item in names:
        if isinstance(item, PlateFormat):
            out.append(item)
        elif item in KNOWN_FORMATS:
            out.append(KNOWN_FORMATS[item])
        else:
            raise KeyError(f"unknown plate format {item!r}; known: {', '.join(KNOWN_FORMATS)}")
    return tuple(out)


def match_format(text: str, formats: Iterable[PlateFormat]) -> PlateFormat | None:
    """The format `text` fits as is with the highest prior, or None."""
    best: tuple[float, PlateFormat] | None = None
    for fmt in formats:
        fixed = fmt.fix(text)
        if fixed is not None and fixed[0] == text and (best is None or fixed[1] > best[0]):
            best = (fixed[1], fmt)
    return best[1] if best else None


@dataclass(frozen=True)
class PlateRead:
    """A plate string chosen from one or more OCR reads."""

    text: str
    confidence: float
    format_name: str | None
    char_confidences: tuple[float, ...] = ()
    raw_text: str = ""
    score: float = 0.0  # log-domain evidence (OCR + format prior), comparable for one plate
    votes: int = 1
    # How sure the read is to be a plate's text at all, where the reader says so apart from `confidence`
    # (the ensemble: without the cap of a look-alike twin, which is a doubt about one glyph, not about
    # there being a plate); None: `confidence`.
    plate_confidence: float | None = None


# A string that fits no format at all (not even the generic 4-8 fallback) is ranked this far below
# an arbitrary string of the generic shape.
UNFORMATTED_PENALTY = -5.0


def _format_bonus(text: str, log_prior: float) -> float:
    """How much more likely a format makes `text` than an arbitrary A-Z0-9 string of its length
    (log ratio against the generic fallback's prior), so strings of different lengths compare."""
    return log_prior - (-len(text) * float(np.log(36.0)) - float(np.log(len(GENERIC.templates))))


def apply_formats(text: str, formats: Sequence[PlateFormat]) -> tuple[str, PlateFormat | None, float]:
    """Repair one string with the formats: (text, best format or None, log bonus of the format)."""
    best: tuple[str, PlateFormat | None, float] = (text, None, UNFORMATTED_PENALTY)
    for fmt in formats:
        fixed = fmt.fix(text)
        if fixed is not None:
            bonus = _format_bonus(fixed[0], fixed[1])
            if bonus > best[2]:
                best = (fixed[0], fmt, bonus)
    return best


def choose_best(
    reads: Sequence[tuple[str, float]], formats: Sequence[PlateFormat] = (), min_len: int = 2
) -> PlateRead | None:
    """Pick one plate text from several (raw text, confidence) reads of the same plate.

    For OCR output without a posterior. Each read is normalised and format-repaired; reads that
    end as the same text pool their confidence (votes from crop variants or frames); the choice is
    by log(pooled confidence) + the format's bonus over an arbitrary string (`_format_bonus`)."""
    pooled: dict[str, list] = {}
    for raw, conf in reads:
        text = normalize(raw)
        if len(text) < min_len:
            continue
        fixed, fmt, bonus = apply_formats(text, formats) if formats else (text, None, 0.0)
        entry = pooled.setdefault(fixed, [0.0, 0, fmt, raw, 0.0, bonus])
        entry[0] += float(max(conf, 1e-6))
        entry[1] += 1
        entry[4] = max(entry[4], float(conf))
        entry[5] = max(entry[5], bonus)
    if not pooled:
        return None

    def key(item):
        evidence, _, _, _, conf, bonus = item[1]
        return (float(np.log(evidence)) + bonus, conf)

    text, (evidence, votes, fmt, raw, conf, bonus) = max(pooled.items(), key=key)
    return PlateRead(
        text,
        conf,
        fmt.name if fmt else None,
        raw_text=raw,
        score=float(np.log(evidence)) + bonus,
        votes=votes,
    )


# --------------------------------------------------------------------------------------------
# Format-constrained decoding of a CTC posterior.

NEG = -1e9


@dataclass(frozen=True)
class CtcScores:
    """Per-frame log-probabilities of a CTC recogniser reduced to what plates need."""

    blank: np.ndarray  # (T,)
    alnum: np.ndarray  # (T, 36) in ALPHABET order
    other: np.ndarray  # (T,) any symbol that is neither blank nor A-Z0-9 (dash, dot, emblem...)

    @classmethod
    def from_probs(
        cls, probs: np.ndarray, blank_index: int, alnum_indices: Sequence[int | Sequence[int]]
    ) -> CtcScores:
        """`alnum_indices[k]`: the model's symbol index (or indices, e.g. upper and lower case) that
        mean ALPHABET[k]; their probabilities are summed."""
        eps = 1e-9
        p = np.asarray(probs, dtype=np.float64)
        cols = np.stack(
            [p[:, [i] if isinstance(i, int | np.integer) else list(i)].sum(1) for i in alnum_indices], 1
        )
        return cls(
            blank=np.log(p[:, blank_index] + eps),
            alnum=np.log(np.clip(cols, 0.0, 1.0) + eps),
            other=np.log(np.clip(1.0 - p[:, blank_index] - cols.sum(1), 0.0, 1.0) + eps),
        )

    def greedy(self) -> tuple[str, tuple[float, ...]]:
        """Best path restricted to A-Z0-9 (what a plain read gives, minus foreign symbols)."""
        use = self.alnum.max(1) > self.blank
        ids = self.alnum.argmax(1)
        text, confs, prev = [], [], -1
        for t in range(len(ids)):
            cur = int(ids[t]) if use[t] else -1
            if cur >= 0 and cur != prev:
                text.append(ALPHABET[cur])
                confs.append(float(np.exp(self.alnum[t, cur])))
            prev = cur
        return "".join(text), tuple(confs)


@dataclass
class _Automaton:
    """Templates stacked for one vectorised Viterbi pass."""

    owner: np.ndarray  # (N,) index of the format each template belongs to
    allow: np.ndarray  # (N, Lm+1, 36) 0 where the char may stand at that position, NEG elsewhere
    kind: np.ndarray  # (N, Lm+1) which emission table a position uses (its class set)
    lengths: np.ndarray  # (N,)
    priors: np.ndarray  # (N,) log prior of a string under each template
    sub_w: list[np.ndarray]  # per class set: (36, 36) log weight of reading column as row, NEG if none


def _sub_weights(chars: frozenset[str]) -> np.ndarray:
    w = np.full((36, 36), NEG)  # w[wanted, seen]: a look-alike from outside the set may stand in
    for c in chars:
        for alt, weight in _LOOKALIKE[c]:
            if alt not in chars:
                w[_INDEX[c], _INDEX[alt]] = np.log(weight)
    return w


def _build(
    rows: Sequence[tuple[Template, int, float, str | None]],
) -> _Automaton:
    """rows: (template, format index, log prior, forced text or None)."""
    lm = max(len(t) for t, _, _, _ in rows)
    sets: list[frozenset[str]] = []
    allow = np.full((len(rows), lm + 1, 36), NEG)
    kind = np.zeros((len(rows), lm + 1), np.int64)
    for n, (template, _, _, forced) in enumerate(rows):
        for j, chars in enumerate(template, start=1):
            if chars not in sets:
                sets.append(chars)
            kind[n, j] = sets.index(chars)
            allowed = forced[j - 1] if forced is not None else chars
            allow[n, j, [_INDEX[c] for c in allowed]] = 0.0
    return _Automaton(
        owner=np.array([r[1] for r in rows]),
        allow=allow,
        kind=kind,
        lengths=np.array([len(r[0]) for r in rows]),
        priors=np.array([r[2] for r in rows]),
        sub_w=[_sub_weights(c) for c in sets],
    )


_AUTOMATA: dict[tuple[PlateFormat, ...], _Automaton] = {}


def _format_automaton(formats: Sequence[PlateFormat]) -> _Automaton:
    key = tuple(formats)
    if key not in _AUTOMATA:
        rows = [
            (t, i, p, None)
            for i, f in enumerate(formats)
            for t, p in zip(f.templates, f.log_priors, strict=True)
        ]
        _AUTOMATA[key] = _build(rows)
    return _AUTOMATA[key]


@dataclass(frozen=True)
class SkipPrior:
    """Probability that a glyph which is no plate character stands before the first character,
    between two characters, or after the last one. From plate layouts, not from data: most EU
    plates carry the country band on the left; stickers, seals and coats of arms sit between
    character groups (DE, CZ, SK, old CS); nothing standard follows the last character."""

    left: float = 0.1
    inner: float = 0.05
    right: float = 0.02


DEFAULT_SKIP = SkipPrior()


def _viterbi(scores: CtcScores, auto: _Automaton, skip: SkipPrior):
    """Forward pass over all templates at once. Returns (end scores (3, N), history, pen, emis, ej).

    States per template and position j (characters emitted so far): B blank; C[c] emitting char c
    as the j-th plate character; J[k] inside a skipped glyph k (36 alphanumerics + "other"). A
    skipped glyph pays `pen` each time one starts, so every extra glyph costs, however many blank
    frames lie between them."""
    T = scores.alnum.shape[0]
    N, lm1, _ = auto.allow.shape
    # emissions per class set: the char's own prob, or a look-alike's prob times its weight
    emis = np.stack(
        [np.maximum(scores.alnum, (scores.alnum[:, None, :] + w[None]).max(2)) for w in auto.sub_w]
    )  # (S, T, 36)
    ej = np.concatenate([scores.alnum, scores.other[:, None]], 1)  # (T, 37) skipped-glyph emissions
    # a skipped glyph also pays the prior of "which symbol" (1/36) that a kept one pays via its class
    pen = np.full((N, lm1), np.log(skip.inner / 36.0))
    pen[:, 0] = np.log(skip.left / 36.0)
    pen[np.arange(lm1)[None, :] == auto.lengths[:, None]] = np.log(skip.right / 36.0)

    B = np.full((N, lm1), NEG)
    J = np.full((N, lm1, 37), NEG)
    C = np.full((N, lm1, 36), NEG)
    B[:, 0] = scores.blank[0]
    J[:, 0] = pen[:, 0, None] + ej[0]
    C[:, 1] = auto.allow[:, 1] + emis[auto.kind[:, 1], 0]
    hist = [(B, J, C)]  # kept for the backtrack, which re-derives each choice from these scores
    chars36 = np.arange(36)
    for t in range(1, T):
        c1 = C.max(2)
        a1 = C.argmax(2)
        masked = C.copy()
        np.put_along_axis(masked, a1[:, :, None], NEG, axis=2)
        c2 = masked.max(2)
        j1 = J.max(2)
        new_b = np.maximum(np.maximum(B, c1), j1) + scores.blank[t]
        start = np.maximum(np.maximum(B, c1), j1) + pen  # a new skipped glyph begins
        new_j = np.maximum(J, start[:, :, None]) + ej[t]
        # entering position j from position j-1: the previous char must differ (CTC needs a blank
        # between two equal characters), hence the runner-up where the best is the same char
        prev_c = np.full_like(C, NEG)
        prev_c[:, 1:] = np.where(a1[:, :-1, None] == chars36, c2[:, :-1, None], c1[:, :-1, None])
        from_bj = np.full((N, lm1), NEG)
        from_bj[:, 1:] = np.maximum(B[:, :-1], j1[:, :-1])
        new_c = np.maximum(np.maximum(C, from_bj[:, :, None]), prev_c) + emis[auto.kind, t] + auto.allow
        B, J, C = new_b, new_j, new_c
        hist.append((B, J, C))
    rows = np.arange(N)
    ends = np.stack([B[rows, auto.lengths], J[rows, auto.lengths].max(1), C[rows, auto.lengths].max(1)])
    return ends, hist, pen, emis


def decode_ctc(
    scores: CtcScores,
    formats: Sequence[PlateFormat],
    skip: SkipPrior = DEFAULT_SKIP,
) -> list[PlateRead]:
    """Best string per format under the CTC posterior (Viterbi over a template automaton).

    A template char may be emitted by a look-alike glyph at the look-alike weight. A glyph that
    belongs to no template position can be skipped as "junk" at the probabilities of `skip`
    (`SkipPrior`: country band on the left, stickers and emblems in between). Returns one
    PlateRead per format that could be decoded, best first; `score` is the path log-probability
    plus the string's log prior under its template."""
    if scores.alnum.shape[0] == 0 or not formats:
        return []
    auto = _format_automaton(formats)
    ends, hist, pen, emis = _viterbi(scores, auto, skip)
    final = ends.max(0) + auto.priors
    results = []
    for fi, fmt in enumerate(formats):
        members = np.flatnonzero(auto.owner == fi)
        n = int(members[final[members].argmax()])
        if final[n] <= NEG / 2:
            continue
        text, confs = _backtrack(n, int(ends[:, n].argmax()), auto, hist, pen[n], emis)
        if text is None:
            continue
        results.append(PlateRead(text, float(np.mean(confs)), fmt.name, tuple(confs), score=float(final[n])))
    results.sort(key=lambda r: -r.score)
    return results


def template_for(text: str, fmt: PlateFormat) -> tuple[Template, float] | None:
    """The template of `fmt` that `text` fits exactly, with its log prior."""
    for template, prior in zip(fmt.templates, fmt.log_priors, strict=True):
        if len(template) == len(text) and all(
            c in allowed for c, allowed in zip(text, template, strict=True)
        ):
            return template, prior
    return None


def score_texts(
    scores: CtcScores,
    hypotheses: Sequence[tuple[str, PlateFormat]],
    skip: SkipPrior = DEFAULT_SKIP,
) -> list[PlateRead | None]:
    """Log-likelihood of fixed (text, format) hypotheses under one posterior (forced alignment with
    the same look-alike and skip rules as `decode_ctc`); the format prior is NOT included, so that
    scores of several crops of one plate can be summed and the prior added once."""
    rows, index = [], []
    for text, fmt in hypotheses:
        found = template_for(text, fmt)
        index.append(len(rows) if found else None)
        if found:
            rows.append((found[0], 0, found[1], text))
    out: list[PlateRead | None] = [None] * len(hypotheses)
    if not rows or scores.alnum.shape[0] == 0:
        return out
    auto = _build(rows)
    ends, hist, pen, emis = _viterbi(scores, auto, skip)
    final = ends.max(0)
    for h, n in enumerate(index):
        if n is None or final[n] <= NEG / 2:
            continue
        text, confs = _backtrack(n, int(ends[:, n].argmax()), auto, hist, pen[n], emis)
        if text is not None:
            out[h] = PlateRead(
                text, float(np.mean(confs)), hypotheses[h][1].name, tuple(confs), score=float(final[n])
            )
    return out


def _backtrack(n: int, end_state: int, auto: _Automaton, hist, pen: np.ndarray, emis: np.ndarray):
    """Follow the best path of template `n` backwards, re-deriving each step from the stored scores."""
    length = int(auto.lengths[n])
    j, state = length, end_state  # state 0 blank, 1 skipped glyph, 2 char
    last_b, last_j, last_c = (a[n] for a in hist[-1])
    c = int(last_c[j].argmax()) if state == 2 else int(last_j[j].argmax())
    chars: dict[int, int] = {}
    best: dict[int, float] = {}
    for t in range(len(hist) - 1, -1, -1):
        if state == 2:
            chars[j] = c
            best[j] = max(best.get(j, NEG), float(emis[auto.kind[n, j], t, c]))
        if t == 0:
            break
        pB, pJ, pC = (a[n] for a in hist[t - 1])
        if state == 0:
            options = [
                (pB[j], 0, -1),
                (pC[j].max(), 2, int(pC[j].argmax())),
                (pJ[j].max(), 1, int(pJ[j].argmax())),
            ]
        elif state == 1:
            options = [
                (pJ[j, c], 1, c),
                (pB[j] + pen[j], 0, -1),
                (pC[j].max() + pen[j], 2, int(pC[j].argmax())),
                (pJ[j].max() + pen[j], 1, int(pJ[j].argmax())),
            ]
        else:
            options = [(pC[j, c], 2, c)]
            if j > 1:
                prev = pC[j - 1].copy()
                prev[c] = NEG
                options += [
                    (pB[j - 1], 0, -1),
                    (pJ[j - 1].max(), 1, int(pJ[j - 1].argmax())),
                    (prev.max(), 3, int(prev.argmax())),
                ]
            elif j == 1:
                options += [(pB[0], 0, -1), (pJ[0].max(), 1, int(pJ[0].argmax()))]
        _, kind, nc = max(options, key=lambda o: o[0])
        if state == 2 and kind != 2:
            j -= 1
            state = 2 if kind == 3 else kind
        else:
            state = kind
        c = nc
    if len(chars) != length:
        return None, []
    return "".join(ALPHABET[chars[i]] for i in range(1, length + 1)), [
        float(np.exp(best[i])) for i in range(1, length + 1)
    ]
