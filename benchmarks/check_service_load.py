"""Load on the readers' check service: answers checked per second, p50 and p99 latency.

Starts ``python -m service`` on 127.0.0.1 with N uvicorn workers and a fresh
SQLite database, runs ``service.loadtest`` (R concurrent readers for S
seconds, every request on the loopback address, bounded in count and time),
then stops the service. The readers answer with A1's reference functions,
so every verdict must be "passed".

    .venv/bin/python benchmarks/check_service_load.py [--workers 2] [--readers 32] [--seconds 20]

Writes benchmarks/results/cpu/check_service_load.json.
"""
import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _service import ServiceProcess  # noqa: E402
from service import loadtest  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--readers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cpu" / "check_service_load.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CHECK_SERVICE_RATE_PER_ADDRESS": "1000000", "CHECK_SERVICE_RATE_PER_TOKEN": "1000000"}
        with ServiceProcess(f"sqlite:///{tmp}/load.db", workers=args.workers, env=env) as service:
            stats = loadtest.run(service.url, readers=args.readers, seconds=args.seconds)
    result = {"workers": args.workers, "readers": args.readers, **loadtest.summary(stats),
              "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
              "python": platform.python_version()}
    print(json.dumps(result, indent=1))
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
