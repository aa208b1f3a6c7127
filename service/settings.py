"""Service settings, read from the environment with the LEANSERVE_ prefix.

The drift monitor's and the closed loop's settings take their defaults from monitoring's config classes
(`monitoring.config`, `monitoring.policy`), which own them; `service.monitoring_config` builds those
configs from the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from monitoring.config import MonitorConfig, PolicyConfig, TriggerConfig

MIN_ADMIN_TOKEN_CHARS = 16


class ServiceSettings(BaseSettings):
    """Every field can be set as LEANSERVE_<NAME> (e.g. LEANSERVE_GRPC_PORT=9001)."""

    model_config = SettingsConfigDict(env_prefix="LEANSERVE_", extra="ignore", allow_inf_nan=False)

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
        default=None,
        ge=1,
        description="Intra-op threads of a lone request's run; default: the build's serving stage's choice.",
    )
    parallel_sessions: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Runs in flight at once (requests, or merged batches), one thread each under load; "
        "default: the build's serving stage's choice.",
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest request body (every HTTP route, chunked or not) or gRPC message; 413 beyond.",
    )
    batch_max_rows: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="Most rows run together from concurrent requests, for batch-invariant variants only "
        "(the build measured that batching changes no answer); 1: every request runs alone; default: the "
        "build's serving stage's choice.",
    )
    batch_wait_ms: float | None = Field(
        default=None,
        ge=0.0,
        le=1000.0,
        description="How long a batch waits for more requests after its first, at most; 0: no wait, a batch "
        "is what queued while the previous one ran (a lone request runs at once); default: the build's "
        "serving stage's choice.",
    )
    max_inflight_requests: int = Field(
        default=128,
        ge=1,
        description="Requests one worker works on at once, waiting for the model included (HTTP requests "
        "with a body and gRPC inferences): the queue depth. Requests past it are refused with 503 / "
        "RESOURCE_EXHAUSTED and a message, not queued.",
    )
    max_inflight_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Request bytes one worker works on at once (bodies and gRPC messages); requests past it "
        "are refused with 503 / RESOURCE_EXHAUSTED, not queued.",
    )
    max_rows_per_run: int = Field(
        default=256,
        ge=1,
        description="Rows of a tensor request run through the model at once; larger batches run in slices, "
        "so a model's working memory does not grow with the request.",
    )
    request_read_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="An HTTP request must arrive whole (headers and body) within this many seconds of its "
        "first byte or of the connection opening; also the gRPC connection handshake limit.",
    )
    grpc_idle_timeout_s: float = Field(
        default=300.0, gt=0, description="A gRPC connection with no call for this long is closed."
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
        default=MonitorConfig.sample_rate, ge=0.0, le=1.0, description="Share of rows sampled for drift."
    )
    drift_window_size: int = Field(
        default=MonitorConfig.window_size, ge=10, description="Rows kept per model (memory bound)."
    )
    drift_min_samples: int = Field(
        default=MonitorConfig.min_samples, ge=10, description="Rows needed before a window is judged."
    )
    drift_min_distinct: int = Field(
        default=MonitorConfig.min_distinct,
        ge=0,
        description="Distinct inputs a drift window needs before it is judged (fewer: one client replaying "
        "requests, no verdict); 0 turns the rule off.",
    )
    drift_interval_s: float = Field(
        default=MonitorConfig.interval_s, gt=0, description="Seconds between drift evaluations."
    )
    reoptimise_enabled: bool = Field(
        default=True, description="Let drift or latency trouble start a re-optimisation."
    )
    reoptimise_drift_share: float = Field(
        default=PolicyConfig.input_drift_threshold,
        gt=0,
        le=1,
        description="The policy's input drift threshold: share of drifted features that counts as drift.",
    )
    reoptimise_windows: int = Field(
        default=PolicyConfig.drift_windows, ge=1, description="Consecutive bad windows before acting."
    )
    reoptimise_cooldown_s: float = Field(
        default=PolicyConfig.cooldown_s, ge=0, description="No new run this soon after the last."
    )
    reoptimise_max_per_hour: int = Field(
        default=PolicyConfig.max_runs_per_hour, ge=1, description="Cap on runs per model and hour."
    )
    latency_slo_ms: float | None = Field(
        default=PolicyConfig.latency_slo_ms, gt=0, description="p95 inference latency objective per window."
    )
    shadow_rows: int = Field(
        default=TriggerConfig.shadow_rows, ge=1, description="Live rows a candidate must answer in shadow."
    )
    shadow_timeout_s: float = Field(
        default=TriggerConfig.shadow_timeout_s,
        gt=0,
        description="Seconds the shadow run waits for its live rows; a candidate that saw none is refused.",
    )
    reoptimise_time_budget_s: float = Field(
        default=TriggerConfig.build_time_budget_s, gt=0, description="Search budget of a re-optimisation."
    )
    reoptimise_distil_time_s: float = Field(
        default=TriggerConfig.distil_time_s,
        ge=0,
        allow_inf_nan=False,
        description="Seconds a re-optimisation of a tensor model trains distilled students on half the "
        "recent inputs added to the model's distillation data, apart from its search budget; 0: it does "
        "not distil.",
    )
    audit_log: Path | None = Field(
        default=None, description="JSON-lines audit log; default $BENTOML_HOME/leanserve-audit.jsonl."
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description=f"Bearer token for /admin, at least {MIN_ADMIN_TOKEN_CHARS} characters; the admin routes "
        "do not exist without it (unset, empty or blank).",
    )

    @field_validator("admin_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: object) -> object:
        # A variable set to "" (an empty Kubernetes secret, `LEANSERVE_ADMIN_TOKEN=`) must not become a
        # token that an empty bearer matches: blank means the admin API is off.
        if isinstance(value, str | SecretStr):
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            return text.strip() or None
        return value

    @field_validator("admin_token")
    @classmethod
    def _token_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_ADMIN_TOKEN_CHARS:
            raise ValueError(
                f"LEANSERVE_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_CHARS} characters "
                "(e.g. `openssl rand -hex 32`), or unset to turn the admin API off"
            )
        return value

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value
