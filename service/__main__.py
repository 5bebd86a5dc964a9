"""Run the check service: ``python -m service [--host H] [--port P] [--workers N]``.

Migrates the database once, then starts uvicorn with N worker processes.
``make serve`` runs it on 127.0.0.1:8765.
"""
import argparse
import os

import uvicorn

from service import db


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    url = os.environ.get("CHECK_SERVICE_DATABASE_URL") or db.default_url()
    os.environ["CHECK_SERVICE_DATABASE_URL"] = url
    db.migrate(url)
    os.environ["CHECK_SERVICE_MIGRATE"] = "0"
    print(f"check service on http://{args.host}:{args.port} ({args.workers} worker(s)), database {url}", flush=True)
    uvicorn.run("service.main:app", host=args.host, port=args.port, workers=args.workers, log_level="warning")


if __name__ == "__main__":
    main()
