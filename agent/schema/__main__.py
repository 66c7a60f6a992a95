"""``python -m agent.schema [--check]``: regenerate (or check) the event schema and the event docs."""

from __future__ import annotations

import argparse
import sys

from agent.schema import DOCS_PATH, SCHEMA_PATH, docs_text, schema_text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="only say whether the committed files are current")
    args = parser.parse_args(argv)
    wanted = {SCHEMA_PATH: schema_text(), DOCS_PATH: docs_text(DOCS_PATH.read_text())}
    stale = [path for path, text in wanted.items() if path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is not what `python -m agent.schema` generates; run it and commit the result",
                  file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path])
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
