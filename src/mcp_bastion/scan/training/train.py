"""Fit the injection classifier and write ``scan/injection-model.json`` (``scripts/train-detector``).

The model is L2-regularised logistic regression over word uni- and bigram counts of one window of folded
text, fitted by AdaGrad in pure Python. Training items are cut into the same windows the runtime scores
(``injection.window_starts``); a generated item whose injection span is known labels only the windows that
hold the injection as positive and the windows that miss it as negative (windows that graze it are left
out), so the model learns what an injected paragraph looks like next to ordinary content.

Reproducibility invariants: a fixed seed drives every random choice; vocabularies and files are iterated
in sorted order; floats are rounded to ``DECIMALS`` places before writing; the JSON is written with sorted
keys and fixed separators. The same artifacts (their SHA-256 is written into the model under ``inputs``)
give a byte-identical file. ``--check`` rebuilds in memory and compares with the shipped file.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from mcp_bastion.scan.fold import fold, tag_payload
from mcp_bastion.scan.injection import InjectionDetector, tokens, window_starts
from mcp_bastion.scan.training import corpora, datasets
from mcp_bastion.scan.training.datasets import Item

__all__ = ["Params", "fit", "main", "model_bytes", "train_items"]

MODEL_PATH = Path(__file__).resolve().parent.parent / "injection-model.json"
DECIMALS = 3


@dataclass(frozen=True, slots=True)
class Params:
    window: int = 16
    stride: int = 4
    epochs: int = 6
    learning_rate: float = 0.15
    l2: float = 1e-4
    min_count: int = 5
    prune: float = 0.08
    max_features: int = 30000
    """Only the features with the largest weights are kept (ties by name), to keep the shipped file small."""
    dev_every: int = 10
    """Every n-th training item (after a seeded shuffle) is kept out of fitting to choose thresholds."""
    dev_false_positive: float = 0.01
    """Thresholds are set so at most this share of benign development items of each kind is flagged."""
    floor: float = -0.3
    """Lower bound on every feature weight: benign context around an injected paragraph can lower a
    window's score only so far, so padding an instruction with ordinary text does not hide it."""
    seed: int = datasets.SEED


Window = tuple[dict[str, int], int, float]

# The labelled prompt corpora are large, templated and about chat jailbreaks, so their vocabulary
# ("restrictions", "run", "configuration") would dominate; benign tool-result-like carriers are what the
# detector sees most in production. Weights per training category shift that balance.
_SAMPLE_WEIGHT = {"prompt corpus": 0.5, "benign result": 2.0, "benign description": 2.0}


# Function words get no unigram weight of their own: alone they say nothing about who a text addresses,
# and summed over a window of ordinary prose they would add up to a false alarm. They still count inside
# bigrams ("ignore all", "you are"), where they do carry meaning.
_STOPWORD_TEXT = (
    "a an the and or but if of to in on at by for with from as is are was were be been being am it its this "
    "that these those there here then than so such not no nor do does did done have has had having will would "
    "shall should can could may might must i me my we our us you your he him his she her they them their what "
    "which who whom when where why how all any each both few more most other some own same too very just also "
    "only into out up down over under again further once about above below between through during before "
    "after"
)
STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def _features(toks: Sequence[str]) -> dict[str, int]:
    counts = Counter(t for t in toks if t not in STOPWORDS)
    counts.update(f"{a} {b}" for a, b in pairwise(toks))
    return dict(counts)


def _item_tokens(item: Item) -> tuple[list[str], tuple[int, int] | None]:
    """The tokens the runtime reads for ``item`` and the token range of its embedded injection, if any."""
    text = item.text
    hidden = tag_payload(text)
    main = tokens(fold(text))
    extra = tokens(fold(hidden)) if hidden else []
    if item.span is None:
        return main + extra, None
    start, end = item.span
    if hidden and not tokens(fold(text[start:end])):  # the injection is the tag payload
        return main + extra, (len(main), len(main) + len(extra))
    first = len(tokens(fold(text[:start])))
    return main + extra, (first, first + len(tokens(fold(text[start:end]))))


def windows(item: Item, params: Params) -> list[Window]:
    toks, span = _item_tokens(item)
    out: list[Window] = []
    for start in window_starts(len(toks), params.window, params.stride):
        chunk = toks[start : start + params.window]
        if not chunk:
            continue
        label = item.label
        if span is not None:
            overlap = max(0, min(span[1], start + len(chunk)) - max(span[0], start))
            needed = min(span[1] - span[0], len(chunk)) * 0.5
            if overlap == 0:
                label = 0
            elif overlap < needed:
                continue
        out.append((_features(chunk), label, _SAMPLE_WEIGHT.get(item.category, 1.0)))
    return out


def fit(data: Sequence[Window], params: Params) -> tuple[float, dict[str, float]]:
    """AdaGrad logistic regression; returns (bias, weights). Classes are balanced by sample weight."""
    frequency: Counter[str] = Counter()
    for features, _, _ in data:
        frequency.update(features.keys())
    vocabulary = {f for f, n in frequency.items() if n >= params.min_count}
    rows = [({f: c for f, c in feats.items() if f in vocabulary}, y, w) for feats, y, w in data]
    positives = sum(w for _, y, w in rows if y == 1)
    negatives = sum(w for _, y, w in rows if y == 0)
    balance = {1: len(rows) / (2.0 * positives), 0: len(rows) / (2.0 * negatives)}
    weights: dict[str, float] = dict.fromkeys(sorted(vocabulary), 0.0)
    squares: dict[str, float] = dict.fromkeys(weights, 1e-8)
    bias, bias_square = 0.0, 1e-8
    rng = random.Random(params.seed)  # noqa: S311 - reproducible shuffling, not security
    order = list(range(len(rows)))
    for _ in range(params.epochs):
        rng.shuffle(order)
        for index in order:
            features, label, sample_weight = rows[index]
            z = bias + sum(weights[f] * c for f, c in features.items())
            p = 1.0 / (1.0 + math.exp(-z)) if z >= -30 else 0.0
            g = (p - label) * sample_weight * balance[label]
            bias_square += g * g
            bias -= params.learning_rate * g / math.sqrt(bias_square)
            for f, c in features.items():
                gf = g * c + params.l2 * weights[f]
                squares[f] += gf * gf
                weights[f] = max(params.floor, weights[f] - params.learning_rate * gf / math.sqrt(squares[f]))
    kept = sorted(
        ((f, round(w, DECIMALS)) for f, w in weights.items() if abs(w) >= params.prune),
        key=lambda fw: (-abs(fw[1]), fw[0]),
    )
    return round(bias, DECIMALS), dict(sorted(kept[: params.max_features]))


def train_items(items: Sequence[Item], params: Params) -> tuple[list[Item], list[Item]]:
    """Split training items into (fit, dev) deterministically."""
    order = list(range(len(items)))
    random.Random(params.seed + 1).shuffle(order)  # noqa: S311 - reproducible split
    fit_items = [items[i] for n, i in enumerate(order) if n % params.dev_every]
    dev_items = [items[i] for n, i in enumerate(order) if not n % params.dev_every]
    return fit_items, dev_items


def _threshold(detector: InjectionDetector, dev: Sequence[Item], kind: str, rate: float) -> float:
    scores = sorted(
        (detector.score(item.text, kind=item.kind) for item in dev if item.label == 0 and item.kind == kind),
        reverse=True,
    )
    if not scores:
        return 0.5
    allowed = int(len(scores) * rate)
    # Just above the score of the first benign item that would exceed the allowance, never below 0.5.
    candidate = scores[allowed] if allowed < len(scores) else 0.0
    return round(min(0.999, max(0.5, candidate + 1e-3)), DECIMALS)


def build_model(items: Sequence[Item], params: Params, inputs: dict[str, str]) -> dict[str, object]:
    fit_items, dev_items = train_items(items, params)
    data = [w for item in fit_items for w in windows(item, params)]
    bias, weights = fit(data, params)
    model: dict[str, object] = {
        "format": 1,
        "window": params.window,
        "stride": params.stride,
        "bias": bias,
        "thresholds": {"description": 0.5, "result": 0.5},
        "weights": weights,
    }
    detector = InjectionDetector(model)
    model["thresholds"] = {
        kind: _threshold(detector, dev_items, kind, params.dev_false_positive) for kind in ("description", "result")
    }
    model["training"] = {
        "seed": params.seed,
        "items": len(fit_items),
        "dev_items": len(dev_items),
        "windows": len(data),
        "epochs": params.epochs,
        "features": len(weights),
    }
    model["inputs"] = inputs
    return model


def report(model: dict[str, object], items: Sequence[Item], title: str) -> list[str]:
    """Flagged share per category and kind on tuning items (the dev split or the validation set)."""
    detector = InjectionDetector(model)
    groups: dict[str, list[bool]] = {}
    for item in items:
        side = "detection" if item.label else "false positives"
        key = f"{item.category.split(' (')[0]} [{item.kind}] ({side})"
        groups.setdefault(key, []).append(bool(detector.findings(item.text, kind=item.kind)))
    lines = [title]
    for key in sorted(groups):
        flags = groups[key]
        lines.append(f"  {key:<66} {sum(flags) / len(flags):7.1%}  {sum(flags):>5}/{len(flags)}")
    return lines


def model_bytes(model: dict[str, object]) -> bytes:
    return (json.dumps(model, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/train-detector", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rebuild and compare with the shipped model")
    parser.add_argument("--output", type=Path, default=MODEL_PATH)
    parser.add_argument("--report", action="store_true", help="print rates on the dev split and validation set")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    corpora.fetch()
    sets = datasets.build()
    model = build_model(sets.train, Params(), corpora.fingerprint())
    data = model_bytes(model)
    elapsed = time.perf_counter() - started
    print(f"trained in {elapsed:.1f} s: {model['training']}, thresholds {model['thresholds']}", file=sys.stderr)
    if args.report:
        _, dev = train_items(sets.train, Params())
        for line in report(model, dev, "dev split (every 10th training item, never fitted)") + report(
            model, sets.validation, "validation (publishers' validation rows, never fitted)"
        ):
            print(line, file=sys.stderr)
    if args.check:
        same = args.output.exists() and args.output.read_bytes() == data
        print("identical to the shipped model" if same else f"DIFFERS from {args.output}", file=sys.stderr)
        return 0 if same else 1
    args.output.write_bytes(data)
    print(f"wrote {args.output} ({len(data)} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
