"""The ``geofm`` command."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["main"]


def _registry_list(args: argparse.Namespace) -> int:
    from geofm.registry import registry_summary

    summary = registry_summary([args.kind] if args.kind else None)
    if args.filter:
        needle = args.filter.lower()
        summary = {
            kind: {src: [n for n in names if needle in n.lower()] for src, names in sources.items()}
            for kind, sources in summary.items()
        }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for kind, sources in summary.items():
        for source, names in sources.items():
            print(f"{kind} [{source}] ({len(names)})")
            for name in names:
                print(f"  {source}_{name}" if kind != "factory" else f"  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geofm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    registry = sub.add_parser("registry", help="inspect the component registries")
    registry_sub = registry.add_subparsers(dest="action", required=True)
    listing = registry_sub.add_parser("list", help="list what can be built, from every source")
    listing.add_argument("kind", nargs="?", choices=["backbone", "decoder", "neck", "factory"])
    listing.add_argument("--filter", help="keep names containing this text (any case)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=_registry_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
