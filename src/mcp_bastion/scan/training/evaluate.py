"""Evaluate the shipped injection detector on the held-out set (``scripts/eval``).

Prints, per category and per source, the share flagged with a 95 % Wilson score interval and the counts:
for injections that share is the detection rate, for benign text the false-positive rate. Then the
headline figures against the targets, which rules and how much of the classifier carried detection, what
was missed (by category and embedding style, never the text itself), and the per-call cost.
Reads only the held-out items (``datasets`` documents the split); the model is the shipped file.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import timeit
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from mcp_bastion.scan.injection import InjectionDetector, Kind
from mcp_bastion.scan.training import corpora, datasets
from mcp_bastion.scan.training.datasets import Item

__all__ = ["PROTOCOL", "main", "wilson"]

PROTOCOL = """
Protocol: the model and its thresholds were fitted and chosen on training material only: thresholds at a 1 %
false-positive rate on a dev split (every 10th training item, never fitted), parameters compared on that dev
split and on the publishers' validation rows of the prompt corpora (scripts/train-detector --report). The
held-out set below (other suites, templates, servers, carriers and the publishers' test rows) is read only here.
'Injected results' are split in two and both are shown: indirect injections (agentdojo injection goals, every
attack template, placed in held-out agentdojo environment data) are the target category; 'jailbreak prompts
placed in results' are chat jailbreaks and prompt-extraction questions from the S-Labs and neuralchemy test
rows (written for a chat model, many not instructions to an agent) placed in held-out carriers. The
multilingual yanismiraoui rows are reported under 'prompt corpus'; the detector is trained on English only."""


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _row(name: str, hits: int, n: int) -> str:
    low, high = wilson(hits, n)
    rate = hits / n if n else 0.0
    return f"  {name:<62} {rate:7.1%}  [{low:6.1%}, {high:6.1%}]  {hits:>5}/{n:<5}"


def _table(title: str, groups: dict[str, list[bool]]) -> None:
    print(f"\n{title}\n  {'':<62} {'rate':>7}  {'95% Wilson':^16}  flagged/n")
    for name in sorted(groups):
        flags = groups[name]
        print(_row(name, sum(flags), len(flags)))


def _pooled(results: Iterable[tuple[Item, bool]], predicate: str, label: int, kind: str) -> tuple[int, int]:
    chosen = [
        flag for item, flag in results if item.label == label and item.kind == kind and predicate in item.category
    ]
    return sum(chosen), len(chosen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/eval", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    corpora.fetch()
    sets = datasets.build()
    detector = InjectionDetector.load()
    started = time.perf_counter()
    results: list[tuple[Item, bool]] = []
    rules: Counter[str] = Counter()
    classifier_only = 0
    for item in sets.heldout:
        found = detector.findings(item.text, kind=item.kind)
        results.append((item, bool(found)))
        if found and item.label == 1:
            reasons = {f.reason for f in found}
            rules.update(reasons)
            if len(found) == 1 and found[0].reason == "reads as instructions to an AI model":
                classifier_only += 1
    elapsed = time.perf_counter() - started

    by_category: dict[str, list[bool]] = defaultdict(list)
    by_source: dict[str, list[bool]] = defaultdict(list)
    for item, flag in results:
        side = "detection" if item.label else "false positives"
        by_category[f"{item.category} [{item.kind}] ({side})"].append(flag)
        by_source[f"{item.category.split(' / ')[0]} <- {item.source} ({side})"].append(flag)
    print(f"held-out items: {len(sets.heldout)} (training items: {len(sets.train)}); scanned in {elapsed:.1f} s")
    _table("By category", by_category)
    _table("By source corpus / embedding style", by_source)

    print(PROTOCOL)
    print("\nHeadline (targets: >= 95 % explicit poisoning, >= 85 % injected results, <= 2 % false positives)")
    for name, predicate, label, kind in (
        ("all poisoned descriptions (incl. embedded jailbreak prompts)", "poisoned description / ", 1, "description"),
        ("  of which public shapes (Invariant Labs, everything-wrong)", "public shapes", 1, "description"),
        ("injected results, indirect (agentdojo injection goals x all 11 templates)", "agentdojo goal", 1, "result"),
        ("jailbreak prompts placed in results (S-Labs, neuralchemy test rows)", "corpus prompt", 1, "result"),
        ("  both pooled (the former single 'injected results' figure)", "injected result", 1, "result"),
        ("benign descriptions: false positives", "benign description", 0, "description"),
        ("benign results (environments, code, docs): false positives", "benign result / ", 0, "result"),
        ("blns: false positives", "blns", 0, "result"),
        ("benign prompts of the labelled corpora: false positives", "prompt corpus", 0, "result"),
    ):
        hits, n = _pooled(results, predicate, label, kind)
        print(_row(name, hits, n))
    explicit = [
        flag
        for item, flag in results
        if item.label == 1 and ("explicit" in item.category or "public shapes" in item.category)
    ]
    print(_row("explicit poisoning (agentdojo goals + public shapes): the target", sum(explicit), len(explicit)))

    detected = sum(1 for item, flag in results if item.label == 1 and flag)
    print(f"\nWhat carried detection ({detected} detected injections): classifier alone {classifier_only}")
    for reason, count in rules.most_common():
        print(f"  {count:>5}  {reason}")

    missed: Counter[str] = Counter()
    false_alarms: Counter[str] = Counter()
    for item, flag in results:
        if item.label == 1 and not flag:
            missed[f"{item.category} <- {item.source}"] += 1
        elif item.label == 0 and flag:
            why = sorted({f.reason for f in detector.findings(item.text, kind=item.kind)})
            false_alarms[f"{item.category}: {'; '.join(why)}"] += 1
    print("\nMissed injections by category <- source/style (most first)")
    for name, count in missed.most_common(15):
        print(f"  {count:>5}  {name}")
    print("\nFalse positives by category: reasons")
    for name, count in false_alarms.most_common(15):
        print(f"  {count:>5}  {name}")
    _cost(detector, sets.heldout)
    return 0


def _cost(detector: InjectionDetector, items: Sequence[Item]) -> None:
    benign = next(i.text for i in items if i.category == "benign result / agentdojo environments" and len(i.text) > 700)
    result = (benign * 3)[:2048]
    description = (
        "Read the complete contents of a file from the file system as text. Only works within allowed directories."
    )
    runs = 2000
    cases: tuple[tuple[str, str, Kind], ...] = (
        ("2 KB benign result", result, "result"),
        ("short benign description", description, "description"),
    )
    for name, text, kind in cases:

        def call(text: str = text, kind: Kind = kind) -> None:
            detector.findings(text, kind=kind)

        seconds = min(timeit.repeat(call, number=runs, repeat=5)) / runs
        print(f"\ncost: {name}: {seconds * 1e6:.1f} us per findings() call", end="")
    print()


if __name__ == "__main__":
    sys.exit(main())
