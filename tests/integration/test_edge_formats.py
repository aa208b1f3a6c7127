"""TFLite and TorchScript versions served by a real server, answering as their runtimes do directly.

The demos are built on the edge profile into TFLite (LiteRT: digits with static int8, MiniLM with
int8 weights and one signature per sequence length) and on the cpu profile into TorchScript (digits),
then served over native REST, OIP v2 REST (tritonclient) and gRPC.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from servers import Server, build_demo, start_server, stop_server
from test_service import TEXTS, assert_same_embeddings, digits_pixels
from tokenizers import Tokenizer

from optimise import store
from optimise.runtimes import LITERT, TORCHSCRIPT, open_session
from optimise.space import SearchSpace
from optimise.types import Precision

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge_tags() -> dict[str, str]:
    int8 = SearchSpace(runtimes=(LITERT,), litert_precisions=(Precision.INT8_STATIC,))
    weights_int8 = SearchSpace(runtimes=(LITERT,), litert_precisions=(Precision.INT8_DYNAMIC,))
    torchscript = SearchSpace(runtimes=(TORCHSCRIPT,), torchscript_precisions=(Precision.FP32,))
    return {
        "digits": build_demo("digits", int8, runtime=LITERT, profile="edge"),
        "minilm": build_demo("minilm", weights_int8, runtime=LITERT, profile="edge"),
        "digits-torchscript": build_demo("digits", torchscript, runtime=TORCHSCRIPT),
    }


@pytest.fixture(scope="module")
def edge_server(edge_tags: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        tmp_path_factory.mktemp("edge") / "bentoml", [edge_tags["digits"], edge_tags["minilm"]]
    )
    yield running
    stop_server(running)


def _stored(tag: str) -> store.StoredVersion:
    return store.artefact(store.get_model(tag))


def _direct(tag: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    stored = _stored(tag)
    selected = stored.manifest.selected
    return open_session(selected.runtime, stored.model_path, 1).run(feeds)[0]


def _direct_embeddings(tag: str, texts: list[str]) -> np.ndarray:
    stored = _stored(tag)
    tokenizer = Tokenizer.from_file(str(stored.root / "preprocessing" / "tokenizer.json"))
    tokenizer.enable_truncation(128)
    tokenizer.no_padding()
    rows = []
    for text in texts:
        e = tokenizer.encode(text)
        feeds = {"input_ids": [e.ids], "attention_mask": [e.attention_mask], "token_type_ids": [e.type_ids]}
        rows.append(_direct(tag, {k: np.array(v, dtype=np.int64) for k, v in feeds.items()})[0])
    return np.stack(rows)


def test_the_versions_are_tflite_and_torchscript(edge_tags: dict[str, str]) -> None:
    digits, minilm = _stored(edge_tags["digits"]), _stored(edge_tags["minilm"])
    assert (digits.manifest.selected.format, digits.manifest.selected.runtime) == ("tflite", LITERT)
    assert digits.manifest.selected.precision is Precision.INT8_STATIC
    assert minilm.manifest.model_file == "model.tflite" and minilm.model_path.stat().st_size < 32 * 2**20
    assert _stored(edge_tags["digits-torchscript"]).manifest.model_file == "model.pt"


def test_tflite_answers_over_every_protocol_as_the_interpreter_does(
    edge_server: Server, edge_tags: dict[str, str]
) -> None:
    pixels = digits_pixels(4, seed=3)
    expected = _direct(edge_tags["digits"], {"pixels": pixels})
    http = triton_http.InferenceServerClient(edge_server.http.removeprefix("http://"))
    tensor = triton_http.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    np.testing.assert_allclose(http.infer("digits", [tensor]).as_numpy("logits"), expected, atol=1e-5)
    grpc_client = triton_grpc.InferenceServerClient(edge_server.grpc)
    assert grpc_client.get_model_metadata("digits", as_json=True)["platform"] == "litert_tflite"
    tensor = triton_grpc.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels)
    np.testing.assert_allclose(grpc_client.infer("digits", [tensor]).as_numpy("logits"), expected, atol=1e-5)
    with edge_server.client() as client:
        classes = client.post("/classify", json={"images": pixels.reshape(4, 64).tolist()})
        assert classes.status_code == 200, classes.text
        assert classes.json()["classes"] == expected.argmax(1).tolist()
        embed = client.post("/embed", json={"texts": TEXTS})
        assert embed.status_code == 200, embed.text
    assert_same_embeddings(np.array(embed.json()), _direct_embeddings(edge_tags["minilm"], TEXTS))
    text = triton_grpc.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in TEXTS], dtype=object))
    embeddings = grpc_client.infer("minilm", [text]).as_numpy("sentence_embedding")
    assert_same_embeddings(embeddings, _direct_embeddings(edge_tags["minilm"], TEXTS))


def test_exported_files_run_with_their_runtime_alone(edge_tags: dict[str, str], tmp_path: Path) -> None:
    leanserve = Path(sys.executable).parent / "leanserve"
    for name, tag in edge_tags.items():
        out = tmp_path / name
        done = subprocess.run(
            [str(leanserve), "models", "export", tag, str(out)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        assert (out / "USAGE.md").is_file()
    pixels = digits_pixels(1, seed=4)
    np.save(tmp_path / "pixels.npy", pixels)
    script = (
        "import sys, numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "run = Interpreter(model_path=sys.argv[1]).get_signature_runner('serving_default')\n"
        "np.save(sys.argv[3], run(args_0=np.load(sys.argv[2]))['output_0'])\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(tmp_path / "digits" / "model.tflite"),
            str(tmp_path / "pixels.npy"),
            str(tmp_path / "out.npy"),
        ],
        check=True,
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "out.npy"), _direct(edge_tags["digits"], {"pixels": pixels}), atol=1e-5
    )
    exported = {p.name for p in (tmp_path / "minilm").iterdir()}
    assert {"model.tflite", "model.io.json", "tokenizer.json", "USAGE.md", "manifest.json"} <= exported
    torchscript = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, torch; print(type(torch.jit.load(sys.argv[1])).__name__)",
            str(tmp_path / "digits-torchscript" / "model.pt"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "ScriptModule" in torchscript.stdout
