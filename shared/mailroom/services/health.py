"""Whether the systems Mailroom depends on answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealthReport:
    checks: dict[str, str]

    @property
    def healthy(self) -> bool:
        return all(result == "ok" for result in self.checks.values())


def check_health(probes: dict[str, Callable[[], None]]) -> HealthReport:
    """Run every probe; a probe answers by returning, fails by raising."""
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            probe()
        except Exception as error:  # noqa: BLE001 - any failure means "not healthy"
            checks[name] = f"error: {type(error).__name__}: {error}"[:300]
        else:
            checks[name] = "ok"
    return HealthReport(checks=checks)
