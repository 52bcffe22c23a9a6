"""Takes a workdir's lock in a process of its own, for tests/test_lock.py.

    python tests/scripts/lock_holder.py WORKDIR hold   # prints "held", then keeps it until killed
    python tests/scripts/lock_holder.py WORKDIR exit   # takes it and exits without releasing it

A refusal is one line on stderr and exit code 2, as the programs do (train/flags.py).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from jsnn.runs.lock import WorkdirLock  # noqa: E402


def main(workdir: str, mode: str) -> None:
    try:
        WorkdirLock(workdir).acquire()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("held", flush=True)
    if mode == "hold":
        while True:
            time.sleep(60)


if __name__ == "__main__":
    main(*sys.argv[1:3])
