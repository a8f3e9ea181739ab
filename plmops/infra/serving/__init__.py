"""Serving exported models with Triton Inference Server: repository writer, local server, client.

See docs/serving.md. `repository` writes the model repository (local or S3), `environment` builds
the separate serving environment, `server` runs its Triton on loopback, `client` queries it.
"""

from plmops.infra.serving.client import ModelInterface, ServingError, TritonClient
from plmops.infra.serving.config import (
    DynamicBatching,
    EnsembleStep,
    InstanceGroup,
    ShapeProfile,
    TensorRTAccelerator,
    TensorSpec,
    TritonModelConfig,
    parse_pbtxt,
)
from plmops.infra.serving.environment import ServeEnvironment, ServeEnvironmentError, build_serve_environment
from plmops.infra.serving.repository import (
    ExportedModel,
    RepositoryError,
    ServedModel,
    WrittenModel,
    inspect_export,
    model_configs,
    write_repository,
)
from plmops.infra.serving.server import ServerError, TritonServer, triton_repository_path

__all__ = [
    "DynamicBatching",
    "EnsembleStep",
    "ExportedModel",
    "InstanceGroup",
    "ModelInterface",
    "RepositoryError",
    "ServeEnvironment",
    "ServeEnvironmentError",
    "ServedModel",
    "ServerError",
    "ServingError",
    "ShapeProfile",
    "TensorRTAccelerator",
    "TensorSpec",
    "TritonClient",
    "TritonModelConfig",
    "TritonServer",
    "WrittenModel",
    "build_serve_environment",
    "inspect_export",
    "model_configs",
    "parse_pbtxt",
    "triton_repository_path",
    "write_repository",
]
