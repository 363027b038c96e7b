"""The figures of a run, per target and side by side, the verdict, and the report as a table
or as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .compare import Status, show_reply
from .workload import Op

__all__ = ["MAX_FAILURE_RATE_DIFF", "MIN_IDENTICAL", "Difference", "Report", "TargetStats"]

MIN_IDENTICAL = 0.99
MAX_FAILURE_RATE_DIFF = 0.02


@dataclass
class TargetStats:
    target: str
    where: str
    ok: int = 0
    client_errors: int = 0
    server_errors: int = 0
    no_reply: int = 0
    reconnects: int = 0

    def count(self, status: Status) -> None:
        if status == "ok":
            self.ok += 1
        elif status == "client_error":
            self.client_errors += 1
        elif status == "server_error":
            self.server_errors += 1
        else:
            self.no_reply += 1

    @property
    def operations(self) -> int:
        return self.ok + self.client_errors + self.server_errors + self.no_reply

    @property
    def failures(self) -> int:
        """Server errors and operations with no reply. Client errors are not failures: the
        workload sends wrong commands on purpose, and the SLO leaves client errors out."""
        return self.server_errors + self.no_reply

    @property
    def failure_rate(self) -> float:
        return self.failures / self.operations if self.operations else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "where": self.where,
            "ok": self.ok,
            "client_errors": self.client_errors,
            "server_errors": self.server_errors,
            "no_reply": self.no_reply,
            "reconnects": self.reconnects,
            "failure_rate": self.failure_rate,
        }


@dataclass(frozen=True, slots=True)
class Difference:
    op: Op
    a: object
    b: object

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.op.index, "db": self.op.db, "command": self.op.describe(),
                "a": show_reply(self.a), "b": show_reply(self.b)}


@dataclass
class Report:
    seed: int
    operations: int
    a: TargetStats
    b: TargetStats
    identical: int = 0
    differing: int = 0
    first_differences: list[Difference] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def identical_ratio(self) -> float:
        return self.identical / self.operations if self.operations else 1.0

    @property
    def failure_rate_difference(self) -> float:
        n = self.operations
        return abs(self.a.failures - self.b.failures) / n if n else 0.0

    @property
    def identical_ok(self) -> bool:
        return self.identical * 100 >= round(MIN_IDENTICAL * 100) * self.operations

    @property
    def failure_rates_ok(self) -> bool:
        diff = abs(self.a.failures - self.b.failures)
        return diff * 100 <= round(MAX_FAILURE_RATE_DIFF * 100) * self.operations

    @property
    def passed(self) -> bool:
        return self.identical_ok and self.failure_rates_ok

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def figures(self) -> dict[str, float]:
        """What the admin port exports as ``dumbkv_crosscheck{figure=...}``."""
        return {
            "identical_ratio": self.identical_ratio,
            "failure_rate_a": self.a.failure_rate,
            "failure_rate_b": self.b.failure_rate,
            "failure_rate_difference": self.failure_rate_difference,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "operations": self.operations,
            "seconds": round(self.seconds, 3),
            "identical": self.identical,
            "differing": self.differing,
            "identical_ratio": self.identical_ratio,
            "failure_rate_difference": self.failure_rate_difference,
            "thresholds": {"min_identical_ratio": MIN_IDENTICAL,
                           "max_failure_rate_difference": MAX_FAILURE_RATE_DIFF},
            "passed": self.passed,
            "exit_code": self.exit_code,
            "targets": {"a": self.a.as_dict(), "b": self.b.as_dict()},
            "first_differences": [d.as_dict() for d in self.first_differences],
        }

    def table(self) -> str:
        def pct(x: float) -> str:
            return f"{100 * x:.2f} %"

        def verdict(ok: bool) -> str:
            return "ok" if ok else "FAIL"

        a, b = self.a, self.b
        rows = [
            ("replies without error", str(a.ok), str(b.ok)),
            ("client errors (-ERR ...)", str(a.client_errors), str(b.client_errors)),
            ("server errors (-SERVERERR)", str(a.server_errors), str(b.server_errors)),
            ("no reply (dropped, timeout)", str(a.no_reply), str(b.no_reply)),
            ("reconnects", str(a.reconnects), str(b.reconnects)),
            ("failure rate (server, none)", pct(a.failure_rate), pct(b.failure_rate)),
        ]
        lines = [
            f"dumbkv crosscheck: {self.operations} operations, seed {self.seed}, "
            f"{self.seconds:.1f} s",
            f"  A  {a.target}  ({a.where})",
            f"  B  {b.target}  ({b.where})",
            "",
            f"  {'':<28}{'A':>12}{'B':>12}",
            *(f"  {name:<28}{x:>12}{y:>12}" for name, x, y in rows),
            "",
            f"  identical results           {self.identical} / {self.operations} = "
            f"{pct(self.identical_ratio)}  (at least {100 * MIN_IDENTICAL:g} %)  "
            f"{verdict(self.identical_ok)}",
            f"  failure-rate difference     {100 * self.failure_rate_difference:.2f} points  "
            f"(at most {100 * MAX_FAILURE_RATE_DIFF:g} points)  "
            f"{verdict(self.failure_rates_ok)}",
            "",
        ]
        if self.first_differences:
            lines.append(f"first differing operations ({len(self.first_differences)} of "
                         f"{self.differing}):")
            for d in self.first_differences:
                lines += [
                    f"  #{d.op.index} (db {d.op.db}) {d.op.describe()}",
                    f"      A: {show_reply(d.a)}",
                    f"      B: {show_reply(d.b)}",
                ]
        else:
            lines.append(f"differing operations: {self.differing}")
        lines += ["", "PASS" if self.passed else "FAIL"]
        return "\n".join(lines)

