"""Print how an installed environment differs from the lock: ``pip freeze | python drift.py LOCK``.

Used by ``make test-latest`` so that drift shows up as a list before the tests run.
"""

from __future__ import annotations

import re
import sys


def pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` lines (comments, markers and options ignored) as {normalised name: version}."""
    found = {}
    for line in lines:
        line = line.split('#', 1)[0].split(';', 1)[0].strip()
        if '==' in line and not line.startswith('-'):
            name, version = line.split('==', 1)
            found[re.sub(r'[-_.]+', '-', name).lower()] = version.strip()
    return found


def main() -> None:
    with open(sys.argv[1]) as f:
        locked = pins(f.readlines())
    installed = pins(sys.stdin.readlines())
    # a local version label (2.13.0+cpu) satisfies the lock's ==2.13.0: not drift
    changed = sorted(
        name for name in installed if name in locked and installed[name].split('+')[0] != locked[name]
    )
    new = sorted(set(installed) - set(locked))
    print(f'drift from {sys.argv[1]}: {len(changed)} newer or different, {len(new)} not in the lock')
    for name in changed:
        print(f'  {name}: {locked[name]} -> {installed[name]}')
    for name in new:
        print(f'  {name}: (not locked) {installed[name]}')


if __name__ == '__main__':
    main()
