"""Service settings, read from the environment with the LEANSERVE_ prefix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """Every field can be set as LEANSERVE_<NAME> (e.g. LEANSERVE_GRPC_PORT=9001)."""

    model_config = SettingsConfigDict(env_prefix="LEANSERVE_", extra="ignore")

    models: Annotated[list[str], NoDecode] = Field(
        default=["minilm", "digits"],
        description="Model store tags to serve, comma-separated: NAME (latest) or NAME:VERSION.",
    )
    embed_model: str = Field(default="minilm", description="Model behind the native /embed endpoint.")
    classify_model: str = Field(default="digits", description="Model behind the native /classify endpoint.")
    grpc_host: str = Field(default="0.0.0.0", description="Interface of the OIP v2 gRPC server.")
    grpc_port: int = Field(
        default=8001, ge=0, le=65535, description="Port of the gRPC server; 0 disables it."
    )
    threads: int | None = Field(
        default=None, ge=1, description="ONNX Runtime intra-op threads; default: what the build measured."
    )
    max_batch_size: int = Field(
        default=32, ge=1, description="Adaptive batching: largest batch of /embed and /classify."
    )
    max_latency_ms: int = Field(
        default=2000,
        ge=1,
        description="Adaptive batching: BentoML answers 503 rather than let a request wait longer than this.",
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body (REST) or message (gRPC); 413 beyond.",
    )
    max_texts: int = Field(default=256, ge=1, description="Most texts in one /embed request or BYTES tensor.")
    max_text_chars: int = Field(
        default=20_000, ge=1, description="Longest single text accepted, in characters."
    )
    text_overflow: Literal["truncate", "reject"] = Field(
        default="truncate",
        description="Texts longer than the model's token limit (128 for minilm): truncated, or rejected with 400.",
    )
    access_log: bool = Field(
        default=False,
        description="BentoML's access log line per request (the leanserve_* metrics count requests either way).",
    )
    trace_requests: bool = Field(
        default=False,
        description="OpenTelemetry spans for inference routes; turn on with a BentoML tracing exporter.",
    )
    drift_enabled: bool = Field(
        default=True, description="Sample live traffic and evaluate drift in the background."
    )
    drift_sample_rate: float = Field(
        default=0.5, ge=0.0, le=1.0, description="Share of rows sampled for drift."
    )
    drift_window_size: int = Field(default=1000, ge=10, description="Rows kept per model (memory bound).")
    drift_min_samples: int = Field(default=200, ge=10, description="Rows needed before a window is judged.")
    drift_interval_s: float = Field(default=30.0, gt=0, description="Seconds between drift evaluations.")
    reoptimise_enabled: bool = Field(
        default=True, description="Let drift or latency trouble start a re-optimisation."
    )
    reoptimise_drift_share: float = Field(
        default=0.3, gt=0, le=1, description="Share of drifted features that counts as drift."
    )
    reoptimise_windows: int = Field(default=3, ge=1, description="Consecutive bad windows before acting.")
    reoptimise_cooldown_s: float = Field(
        default=1800.0, ge=0, description="No new run this soon after the last."
    )
    reoptimise_max_per_hour: int = Field(default=2, ge=1, description="Cap on runs per model and hour.")
    latency_slo_ms: float | None = Field(
        default=None, gt=0, description="p95 inference latency objective per window."
    )
    shadow_rows: int = Field(default=50, ge=1, description="Live rows a candidate must answer in shadow.")
    reoptimise_time_budget_s: float = Field(
        default=60.0, gt=0, description="Search budget of a re-optimisation."
    )
    audit_log: Path | None = Field(
        default=None, description="JSON-lines audit log; default $BENTOML_HOME/leanserve-audit.jsonl."
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bearer token for /admin; the admin routes do not exist without it."
    )

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
