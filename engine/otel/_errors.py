"""The errors of the OpenTelemetry export."""

from __future__ import annotations

from agentledger.engine._errors import EngineError

_EXTRA_HINT = "OpenTelemetry export needs the 'otel' extra: pip install 'agentledger[otel]'"


class OtelNotInstalledError(ImportError):
    """Raised when OpenTelemetry export is used without the ``otel`` extra installed."""

    def __init__(self, missing: str | None = None) -> None:
        detail = f" (cannot import {missing})" if missing else ""
        super().__init__(_EXTRA_HINT + detail)


class OtelExportError(EngineError):
    """Raised when an exporter reports that it could not deliver a run's spans."""
