"""`sluice status`: every model of a running gateway at a glance.

Per model: its versions with their traffic weight, the batch size and timeout in force,
the last minute's answers, errors and latency at the SLO percentile against the SLO; the
shadow, and the rollout's state. Reads `GET /admin/status` with the admin token
(`--token` or SLUICE_ADMIN_TOKEN); `--json` prints the document as it came.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway (default http://127.0.0.1:8000)")
    parser.add_argument("--token", help="the admin token (default: SLUICE_ADMIN_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def fetch(url: str, token: str | None) -> dict:
    request = urllib.request.Request(f"{url.rstrip('/')}/admin/status", headers={"Authorization": f"Bearer {token or ''}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def render(doc: dict) -> str:
    lines = []
    for model in doc["models"]:
        lines.append(f"{model['name']}")
        for v in model["versions"]:
            slo = f"p{v['percentile']:g} {v['latency_ms_at_percentile']} ms" + (f" / SLO {v['slo_ms']:g} ms" if v["slo_ms"] else "")
            lines.append(f"  version {v['version']:>4}  weight {v['weight']:5.1f}%  B={v['batch_size']} T={v['timeout_ms']:g} ms  "
                         f"{v['requests']} answers, {v['errors']} errors in {doc['window_s']:g} s  {slo}"
                         + ("" if v["ready"] else "  NOT READY"))  # fmt: skip
        for version, reason in model["failed"].items():
            lines.append(f"  version {version:>4}  UNAVAILABLE: {reason}")
        traffic = model["traffic"]
        if traffic["sticky_header"]:
            lines.append(f"  sticky by {traffic['sticky_header']}")
        if model["shadow"] is not None:
            s = model["shadow"]
            lines.append(f"  shadow version {traffic['shadow']} ({traffic['shadow_fraction']:.0%} copied): {s['compared']} "
                         f"compared, top class differs {s['top_class_differs_share']}, mean |diff| "
                         f"{s['mean_abs_difference']}, {s['shed']} shed, {s['errors']} errors")  # fmt: skip
        if model["rollout"] is not None:
            r = model["rollout"]
            lines.append(f"  rollout of version {r['version']} over {r['stable']}: {r['state']}, step {r['step']} "
                         f"({r['weight']:g}%), last decision {r['last_decision']}")  # fmt: skip
    return "\n".join(lines) if lines else "no model is serving"


def run(args: argparse.Namespace) -> int:
    try:
        doc = fetch(args.url, args.token or os.environ.get("SLUICE_ADMIN_TOKEN"))
    except urllib.error.HTTPError as exc:
        print(f"sluice status: {args.url} answered {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"sluice status: cannot read {args.url}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc) if args.json else render(doc))
    return 0
