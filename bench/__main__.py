"""Run every benchmark module (or those named: ``make bench ARGS="pipeline chat"``)."""

import argparse
import importlib
import os
import pkgutil
import sys
import time

import django

MODULES = [m.name for m in pkgutil.iter_modules([os.path.dirname(__file__)]) if not m.name.startswith("_")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help=f"benchmarks to run (default all): {', '.join(MODULES)}")
    parser.add_argument("--quick", action="store_true", help="shorter runs, for smoke-testing the benchmarks")
    args = parser.parse_args()
    # Always the bench settings (own bucket, own Redis DBs), whatever the shell exported: the
    # benchmarks start worker processes with them, and a test-settings parent (scripts/slot.sh
    # exports DJANGO_SETTINGS_MODULE) read another bucket than its workers wrote (0 segments).
    os.environ["DJANGO_SETTINGS_MODULE"] = os.environ.get("BENCH_SETTINGS_MODULE", "livestream.settings.bench")
    django.setup()
    failed = 0
    for name in args.only or MODULES:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name} ==", flush=True)
        start = time.monotonic()
        try:
            for line in module.run(args):
                print(line, flush=True)
        except Exception as exc:  # report and go on with the other benchmarks
            failed += 1
            print(f"{name}: FAILED: {type(exc).__name__}: {exc}", flush=True)
        print(f"({name} took {time.monotonic() - start:.0f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
