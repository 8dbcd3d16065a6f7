"""The Lambda backend's reading of a function's REPORT log line (the backend against
`sluice faas-emulator`, in process and behind the gateway, is in e2e/test_lambda_backend.py)."""

from __future__ import annotations

from backends.lambda_backend import parse_report


def test_the_report_line_says_what_was_billed_and_whether_it_was_cold() -> None:
    tail = ("START RequestId: r Version: $LATEST\nEND RequestId: r\nREPORT RequestId: r\tDuration: 12.34 ms\t"
            "Billed Duration: 13 ms\tMemory Size: 1024 MB\tMax Memory Used: 80 MB\tInit Duration: 456.78 ms\t\n")  # fmt: skip
    report = parse_report(tail)
    assert report is not None and (report.duration_ms, report.billed_ms, report.memory_mb) == (12.34, 13.0, 1024)
    assert report.init_ms == 456.78
    warm = parse_report(tail.replace("Init Duration: 456.78 ms\t", ""))
    assert warm is not None and warm.init_ms is None
    assert parse_report("no report here") is None
