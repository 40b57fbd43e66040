"""Report: status files, heartbeats, the instance view and telemetry."""
