"""Build, bind and start the asyncio gRPC server: the OIP v2 service plus standard health checks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from service._generated import grpc_predict_v2_pb2 as pb
from service._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.admission import InflightBudget
from service.dataplane import DataPlane
from service.grpc.servicer import InferenceServicer
from service.settings import ServiceSettings

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# "" is the whole server's health, by the grpc.health.v1 convention.
HEALTH_SERVICES = ("", SERVICE_NAME)


class GrpcServer(NamedTuple):
    """A started server, the port it bound (useful with port 0) and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    return [
        # Several BentoML worker processes bind the same port; the kernel spreads connections.
        ("grpc.so_reuseport", 1),
        # A larger message is refused by gRPC itself with RESOURCE_EXHAUSTED, before it is decoded.
        ("grpc.max_receive_message_length", settings.max_request_bytes),
        # Connections that stay open without calls, or never finish their handshake, are closed.
        ("grpc.max_connection_idle_ms", int(settings.grpc_idle_timeout_s * 1000)),
        ("grpc.server_handshake_timeout_ms", int(settings.request_read_timeout_s * 1000)),
    ]


async def refresh_health(health: health_aio.HealthServicer, dataplane: DataPlane) -> None:
    """Publish the data plane's readiness, overall ("") and for the inference service."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if dataplane.is_ready()
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for service in HEALTH_SERVICES:
        await health.set(service, status)


async def start_grpc_server(
    dataplane: DataPlane, settings: ServiceSettings, budget: InflightBudget
) -> GrpcServer:
    """Start serving on settings.grpc_host:grpc_port (port 0: any free port) in the running event loop."""
    server = grpc.aio.server(options=server_options(settings))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane, budget), server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await refresh_health(health, dataplane)
    dataplane.on_live_changed(_publisher(health, dataplane, asyncio.get_running_loop()))
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    port = server.add_insecure_port(address)
    if port == 0:  # grpc reports a failed bind as port 0 rather than raising
        raise OSError(f"could not bind the gRPC server to {address}")
    await server.start()
    return GrpcServer(server, port, health)


def _publisher(
    health: health_aio.HealthServicer, dataplane: DataPlane, loop: asyncio.AbstractEventLoop
) -> Callable[[], None]:
    """A data-plane listener that republishes readiness on the server's loop (swaps run on other threads)."""

    def publish() -> None:
        if not loop.is_closed():
            asyncio.run_coroutine_threadsafe(refresh_health(health, dataplane), loop)

    return publish
