from pathlib import Path

import numpy as np
import pytest

from optimise.errors import ConfigError, PassFailed
from optimise.passes import build_pass
from optimise.passes.base import PassContext
from optimise.passes.graph_optimise import GraphOptimise, GraphOptimiseConfig
from optimise.runtimes.ort_session import OnnxSession
from optimise.types import PassSpec


def test_optimised_graph_keeps_outputs(tiny_onnx: Path, tiny_context: PassContext) -> None:
    optimised = GraphOptimise(GraphOptimiseConfig()).apply(tiny_onnx, tiny_context)
    batch = tiny_context.bundle.eval_inputs
    np.testing.assert_allclose(
        OnnxSession(optimised).run(batch)[0], OnnxSession(tiny_onnx).run(batch)[0], atol=1e-5
    )


def test_transformer_fusion_that_matches_nothing_drops_the_candidate(
    tiny_onnx: Path, tiny_context: PassContext
) -> None:
    tiny_context.bundle.transformer_type = "bert"  # an MLP has no attention to fuse
    with pytest.raises(PassFailed, match="no bert fusion"):
        GraphOptimise(GraphOptimiseConfig()).apply(tiny_onnx, tiny_context)


def test_unknown_level_is_a_user_error() -> None:
    with pytest.raises(ConfigError, match="level"):
        build_pass(PassSpec("graph_optimise", {"level": 5}))
