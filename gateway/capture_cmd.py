"""`sluice capture read PATH`: captured records back into arrays, for training and references.

PATH is a capture file, a directory of them (every `*.jsonl` under it), or an
`s3://BUCKET/PREFIX` (boto3's usual credentials and endpoint). The output is an `.npz`
of arrays named after the model's tensors, rows along the first axis, in the order the
records were read: what `sluice reference --data` and a training script load with
`numpy.load`. By default only answered records (status 200) are read, so that inputs and
outputs line up row for row; `--errors` reads the error records instead (their inputs).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    read = sub.add_parser("read", help="captured records -> .npz (arrays named after the tensors)",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    read.add_argument("path", metavar="PATH", help="a capture file, a directory of them, or s3://BUCKET/PREFIX")
    read.add_argument("--output", "-o", default="capture.npz", help="the .npz to write (default capture.npz)")
    read.add_argument("--model", help="only this model's records (needed when PATH holds several models)")
    read.add_argument("--version", help="only this version's records")
    read.add_argument("--errors", action="store_true", help="read the error records (status >= 400) instead")


def run(args: argparse.Namespace) -> int:
    from .capture.records import read_source, to_arrays

    def wanted(record: dict) -> bool:
        if args.model is not None and record.get("model") != args.model:
            return False
        if args.version is not None and str(record.get("version")) != args.version:
            return False
        return (record.get("status", 0) >= 400) == args.errors

    models: set[str] = set()

    def selected():
        for record in read_source(args.path):
            if wanted(record):
                models.add(str(record.get("model")))
                yield record

    try:
        arrays, count = to_arrays(selected())
    except (OSError, ValueError) as exc:
        print(f"sluice capture read: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # botocore's errors: a bucket that is not there, no credentials
        print(f"sluice capture read: {args.path}: {exc}", file=sys.stderr)
        return 1
    if len(models) > 1:
        print(f"sluice capture read: {args.path} holds records of models {sorted(models)}; choose one with --model",
              file=sys.stderr)  # fmt: skip
        return 1
    if not count:
        print(f"sluice capture read: no records in {args.path}", file=sys.stderr)
        return 1
    with open(args.output, "wb") as f:
        np.savez(f, **arrays)
    summary = {"records": count, "output": args.output, "arrays": {n: list(a.shape) for n, a in arrays.items()}}
    print(json.dumps(summary))
    return 0
