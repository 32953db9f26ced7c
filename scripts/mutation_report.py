"""Score a finished ``mutmut run`` and check its survivors against the listed ones.

Reads ``mutmut results --all true`` on stdin. Prints killed/total per module and overall;
exits 1 when the score is under the bar or when a surviving mutant is not listed, with
its reason, in the survivors file (scripts/mutation.sh passes both).
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

#: Statuses that mean a test (or a timeout) noticed the mutant.
CAUGHT = {"killed", "timeout", "caught by type check"}
LINE = re.compile(r"^\s*(?P<name>[\w.]+__mutmut_\d+): (?P<status>.+?)\s*$")
LISTED = re.compile(r"`(?P<name>[\w.]+__mutmut_\d+)`")


def main(survivors_file: str, bar: float) -> int:
    totals: Counter[str] = Counter()
    caught: Counter[str] = Counter()
    survivors: list[tuple[str, str]] = []
    for line in sys.stdin:
        match = LINE.match(line)
        if not match:
            continue
        name, status = match["name"], match["status"]
        module = name.split(".x")[0]
        totals[module] += 1
        if status in CAUGHT:
            caught[module] += 1
        else:
            survivors.append((name, status))
    if not totals:
        print("no mutants found: did mutmut run?", file=sys.stderr)
        return 1
    for module in sorted(totals):
        share = caught[module] / totals[module]
        print(f"{module:28} {caught[module]:5}/{totals[module]:<5} {share:7.1%}")
    score = sum(caught.values()) / sum(totals.values())
    print(f"{'overall':28} {sum(caught.values()):5}/{sum(totals.values()):<5} {score:7.1%}")

    listed = set(LISTED.findall(Path(survivors_file).read_text(encoding="utf-8")))
    unlisted = [(name, status) for name, status in survivors if name not in listed]
    stale = sorted(listed - {name for name, _ in survivors})
    for name in stale:
        print(f"listed but no longer surviving (remove it from {survivors_file}): {name}")
    for name, status in unlisted:
        print(f"unlisted survivor ({status}): {name}  (mutmut show {name})")
    failed = False
    if score < bar:
        print(f"FAIL: mutation score {score:.1%} is under {bar:.0%}")
        failed = True
    if unlisted:
        print(f"FAIL: {len(unlisted)} survivor(s) not in {survivors_file}: kill or list them")
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
