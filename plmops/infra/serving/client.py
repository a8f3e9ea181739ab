"""A small client for the ensembles our repositories serve: raw texts in, one result dict per text out.

It exists for `plmops predict` and the tests, and turns tritonclient's failures into errors that say
what to do: no server at the URL, a model that is missing or not ready (with the server's reason), a
request the server rejected (wrong shapes, invalid UTF-8, a text over the model's maximum under the
"reject" truncation policy; the server's message names the input and the item).

Texts given as `str` are sent as UTF-8, with lone surrogates turned back into the bytes they came from
(Python decodes undecodable command-line bytes that way), so an invalid byte reaches the server and
is reported by position instead of failing here without context.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Protocol = Literal["http", "grpc"]
JSON_OUTPUTS = frozenset({"TAGS", "ENTITIES"})


class ServingError(RuntimeError):
    """A prediction could not be made; the message names the server, the model and the cause."""


@dataclass(frozen=True)
class ModelInterface:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    parameters: Mapping[str, str]


class TritonClient:
    """tritonclient over HTTP ("host:port") or gRPC, with errors that name the server and model.

    Use one client per thread: tritonclient's HTTP client (gevent) works only in the thread that made it.
    """

    def __init__(self, url: str, protocol: Protocol = "http", timeout_s: float = 30.0) -> None:
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol must be 'http' or 'grpc', got {protocol!r}")
        self.url, self.protocol, self.timeout_s = url.removeprefix("http://"), protocol, timeout_s
        if protocol == "http":
            import tritonclient.http as module

            self._client = module.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            import tritonclient.grpc as module  # type: ignore[no-redef]

            self._client = module.InferenceServerClient(self.url)
        self._module = module
        self._interfaces: dict[str, ModelInterface] = {}

    def _where(self) -> str:
        return f"Triton at {self.url} ({self.protocol})"

    def check_server(self) -> None:
        try:
            live = self._client.is_server_live()
        except Exception as err:  # tritonclient raises socket, gevent and gRPC errors alike
            raise ServingError(f"no {self._where()} answers: {err}; is the server running (plmops serve)?") from err
        if not live:
            raise ServingError(f"{self._where()} answers but is not live")

    def interface(self, model: str) -> ModelInterface:
        """The model's inputs, outputs and parameters; fails clearly when it is not ready."""
        if model in self._interfaces:
            return self._interfaces[model]
        self.check_server()
        if not self._client.is_model_ready(model):
            raise ServingError(f"model {model!r} is not ready on {self._where()}: {self._model_state(model)}")
        config = self._client.get_model_config(model)
        config = config if isinstance(config, dict) else _grpc_config_dict(config)
        config = config.get("config", config)
        found = ModelInterface(
            name=model,
            inputs=tuple(i["name"] for i in config.get("input", [])),
            outputs=tuple(o["name"] for o in config.get("output", [])),
            parameters={k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()},
        )
        self._interfaces[model] = found
        return found

    def _model_state(self, model: str) -> str:
        index = self._client.get_model_repository_index()
        rows = index if isinstance(index, list) else _grpc_index_rows(index)
        for row in rows:
            if row.get("name") == model and not row.get("state"):
                return "in the repository but not loaded (explicit model control: load it first)"
            if row.get("name") == model:
                reason = row.get("reason", "")
                return f"state {row['state']}" + (f" ({reason})" if reason else "")
        names = sorted({row.get("name", "") for row in rows})
        return f"no such model in the repository; it holds {names}"

    def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One request with the given tensors; every output of the model comes back."""
        interface = self.interface(model)
        tensors = []
        for name, array in inputs.items():
            tensor = self._module.InferInput(name, list(array.shape), _triton_type(array))
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        outputs = [self._module.InferRequestedOutput(name) for name in interface.outputs]
        try:
            result = self._client.infer(model, tensors, outputs=outputs)
        except Exception as err:
            message = err.message() if hasattr(err, "message") else str(err)
            raise ServingError(f"model {model!r} on {self._where()} rejected the request: {message}") from err
        return {name: result.as_numpy(name) for name in interface.outputs}

    def predict(
        self, model: str, texts: Sequence[str | bytes], pairs: Sequence[str | bytes] | None = None,
        batch_size: int = 8,
    ) -> list[dict[str, Any]]:
        """One dict per text, keys the model's outputs in lower case (label, score, truncated, ...).

        `pairs` are the second inputs: TEXT_PAIR of a pair classifier, CONTEXT of a QA model (whose
        `texts` are the questions).
        """
        interface = self.interface(model)
        names = interface.inputs
        if len(names) == 2 and pairs is None:
            raise ServingError(f"model {model!r} takes two texts per item ({', '.join(names)}): pass pairs too")
        if len(names) == 1 and pairs is not None:
            raise ServingError(f"model {model!r} takes one text per item ({names[0]}), but pairs were given")
        if pairs is not None and len(pairs) != len(texts):
            raise ServingError(f"got {len(texts)} texts but {len(pairs)} pairs")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        results: list[dict[str, Any]] = []
        for start in range(0, len(texts), batch_size):
            columns = [texts[start : start + batch_size]]
            if pairs is not None:
                columns.append(pairs[start : start + batch_size])
            arrays = self.infer(model, {n: _text_array(c) for n, c in zip(names, columns)})
            results += _rows(arrays, len(columns[0]))
        return results

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> TritonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text_array(texts: Sequence[str | bytes]) -> np.ndarray:
    encoded = [t if isinstance(t, bytes) else t.encode("utf-8", "surrogateescape") for t in texts]
    return np.asarray(encoded, dtype=np.object_)


def _triton_type(array: np.ndarray) -> str:
    if array.dtype == np.object_ or array.dtype.kind in "SU":
        return "BYTES"
    from tritonclient.utils import np_to_triton_dtype

    return str(np_to_triton_dtype(array.dtype))


def _rows(arrays: Mapping[str, np.ndarray], n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{} for _ in range(n)]
    for name, array in arrays.items():
        for i in range(n):
            rows[i][name.lower()] = _value(name, array[i])
    return rows


def _value(name: str, value: Any) -> Any:
    if isinstance(value, bytes):
        text = value.decode("utf-8")
        return json.loads(text) if name in JSON_OUTPUTS else text
    return value.tolist() if isinstance(value, np.ndarray | np.generic) else value


def _grpc_config_dict(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _grpc_index_rows(message: Any) -> list[dict[str, Any]]:
    return _grpc_config_dict(message).get("models", [])
