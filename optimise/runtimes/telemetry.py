"""OpenVINO usage telemetry, off wherever leanserve touches OpenVINO or NNCF.

The `openvino-telemetry` package reports usage to Google Analytics unless told not to, and
`import openvino` already uses it: openvino/tools/ovc/__init__.py sends an "import" event and
writes a client id and a stats file under ~/intel; `openvino.convert_model` sends about ten
events per conversion and NNCF reports its calls. So `telemetry_off()` wraps the first
`import openvino` (the OpenVINO session's), `import nncf`, conversion and quantisation.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

# NNCF's own switch: nncf/telemetry/wrapper.py swaps its telemetry for a no-op stub when this is
# set, checked once, when `nncf` is first imported.
NNCF_SWITCH = "NNCF_CI"
# openvino_telemetry/utils/opt_in_checker.py (`OptInChecker._run_in_ci`, openvino-telemetry
# 2025.2.0) declines consent when CI is "true" (any case) for callers that pass
# disable_in_ci=True, as ovc (openvino/tools/ovc/telemetry_utils.py, `init_ovc_telemetry`) and
# NNCF (nncf/telemetry/wrapper.py, `NNCFTelemetry`) both do. OpenVINO has no variable of its own.
CI_SWITCH = "CI"


@contextlib.contextmanager
def telemetry_off() -> Iterator[None]:
    """OpenVINO's and NNCF's usage telemetry off for the block: wrap every `import openvino`,
    `import nncf`, model conversion and quantisation in it.

    Sets `NNCF_CI=1` and `CI=true` in `os.environ` for the block and puts them back as they were
    after it, so the rest of the process (a server, a library that reads CI) sees its environment
    unchanged; consent, once declined, stays declined on the telemetry object. No network, no files;
    nestable and cheap.

    Why these, from the installed sources: openvino_telemetry/main.py `Telemetry.init` decides
    consent when the singleton is configured (by `import openvino`, and again when another tool
    such as NNCF reconfigures it); ovc and NNCF pass enable_opt_in_dialog=False, so with no consent
    file it sends and writes ~/intel/openvino_ga_cid and ~/intel/stats. The documented opt-out,
    `opt_in_out --opt_out`, writes "0" to ~/intel/openvino_telemetry (and sends one "declined"
    event itself); the only per-process switch is the CI check above: consent declined, nothing
    sent, nothing written in $HOME. Were telemetry already configured (openvino imported first),
    its consent is withdrawn here too: NNCF sends through that same singleton.

    CI=true is read by a few other libraries too (transformers then propagates its log records to
    the root logger; torch's error_on_custom_op_aliasing defaults on), which a build can live with.

    `openvino.Core` itself (read_model, compile_model, inference) sends nothing: none of its native
    libraries links a network library or holds a telemetry endpoint; `TelemetryExtension` in
    libopenvino.so is only a hook that ovc's convert_impl.py fills with its own callbacks during a
    conversion; and compiling and running a model sends no event (checked with the sender replaced).
    """
    saved = {name: os.environ.get(name) for name in (NNCF_SWITCH, CI_SWITCH)}
    os.environ[NNCF_SWITCH] = "1"
    os.environ[CI_SWITCH] = "true"
    if "openvino_telemetry" in sys.modules:
        _withdraw_consent()
    try:
        yield
    finally:
        if "openvino_telemetry" in sys.modules:
            _withdraw_consent()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _withdraw_consent() -> None:
    from openvino_telemetry import Telemetry

    try:
        configured = Telemetry()  # the singleton; RuntimeError while nothing has configured it
    except RuntimeError:
        return
    configured.consent = False
