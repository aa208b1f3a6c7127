"""The server side of the closed loop: `monitoring.trigger.ServingControl` over the data plane."""

from __future__ import annotations

import numpy as np

from monitoring.monitor import DriftMonitor
from optimise.artefact import Manifest, ModelKind
from service.dataplane import DataPlane
from service.shadow import ShadowResult


class DataPlaneControl:
    def __init__(self, dataplane: DataPlane, monitor: DriftMonitor) -> None:
        self.dataplane = dataplane
        self.monitor = monitor

    def live_version(self, model: str) -> str:
        return self.dataplane.model(model).version

    def live_manifest(self, model: str) -> Manifest:
        return self.dataplane.model(model).manifest

    def recent_inputs(self, model: str) -> dict[str, np.ndarray] | None:
        served = self.dataplane.model(model)
        inputs = self.monitor.recent_inputs(model)
        if inputs is None or served.kind is not ModelKind.TENSOR or len(served.inputs) != 1:
            return None  # text windows keep embeddings, not texts: nothing to recalibrate on
        return {served.inputs[0].name: inputs}

    def stage(self, model: str, version: str) -> Manifest:
        return self.dataplane.stage(model, version).manifest

    def shadow(self, model: str, rows: int, timeout_s: float) -> ShadowResult:
        try:
            return self.dataplane.start_shadow(model).wait(rows, timeout_s)
        finally:
            self.dataplane.stop_shadow(model)

    def promote(self, model: str) -> None:
        self.dataplane.promote(model)

    def discard(self, model: str) -> None:
        self.dataplane.discard_staged(model)
