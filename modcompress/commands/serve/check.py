"""`serve check`: one smoke request to a running server; print labels and probabilities."""

from __future__ import annotations

import argparse
import json

from serve.config import OUTPUT_PROBABILITIES


def register(sub: argparse._SubParsersAction) -> None:
    check = sub.add_parser("check", help="send texts to a running server and print labels and probabilities")
    check.add_argument("url", metavar="URL", help="http://HOST:PORT or grpc://HOST:PORT")
    check.add_argument("--text", action="append", required=True, help="a text to classify (repeatable)")
    check.add_argument("--model", default=None, help="model name (default: the server's only model)")
    check.add_argument("--protocol", choices=("http", "grpc"), default=None, help="for a URL without a scheme")
    check.add_argument("--timeout", type=float, default=30.0, help="seconds (default: %(default)s)")
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """One smoke request: print each text's labels over threshold and its probabilities."""
    from serve.client import ServeClient

    texts = args.text
    with ServeClient(args.url, model=args.model, protocol=args.protocol, timeout_s=args.timeout) as client:
        labels = client.labels()
        if OUTPUT_PROBABILITIES in client.outputs():
            probs = client.predict(texts)
            thresholds = client.thresholds()
            flagged = [[name for name, p, t in zip(labels, row, thresholds, strict=True) if p >= t] for row in probs]
            scores = [dict(zip(labels, map(float, row), strict=True)) for row in probs]
        else:
            flagged, scores = client.predict_labels(texts), [None] * len(texts)
        if args.json:
            rows = [{"text": t, "labels": f, "probabilities": s}
                    for t, f, s in zip(texts, flagged, scores, strict=True)]
            print(json.dumps({"url": client.url, "model": client.model, "results": rows}, indent=2))
            return 0
        print(f"{client.model} at {client.url}")
        for text, names, score in zip(texts, flagged, scores, strict=True):
            shown = text if len(text) <= 60 else text[:57] + "..."
            print(f"{shown!r}: {', '.join(names) or '(no label)'}")
            if score is not None:
                print("  " + "  ".join(f"{name}={p:.4f}" for name, p in score.items()))
    return 0
