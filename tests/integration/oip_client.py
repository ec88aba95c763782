"""Triton's clients, as a user runs them; started by the tests with .tools/client's Python.

oip_client.py infer URL MODEL IMAGE... [--outputs NAME[:json],...] [--json]
    REST; images as binary tensors (the client's default), or as base64 strings in the JSON
    with --json; prints {"outputs": {name: values}, "binary": [names that came back binary]}
oip_client.py grpc TARGET MODEL IMAGE... [--outputs NAME,...]
    gRPC (the client sends tensors in raw_input_contents); prints {"outputs": ..., "raw": N,
    "parameters": ...} with N the raw output contents in the reply, or {"error": CODE, "message"}
oip_client.py grpc-metadata TARGET MODEL   prints the model metadata as JSON
oip_client.py body IMAGE... OUT   writes the REST client's request body; prints its JSON length
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tritonclient import grpc, http
from tritonclient.utils import InferenceServerException


def _images(paths: list[str]) -> np.ndarray:
    return np.array([Path(p).read_bytes() for p in paths], dtype=np.object_)


def _input(paths: list[str], as_json: bool = False) -> http.InferInput:
    data = _images(paths)
    tensor = http.InferInput("image", [len(paths)], "BYTES")
    if as_json:  # JSON holds text: the images as base64, as the v2 JSON form of the predictor asks
        data = np.array([base64.b64encode(d) for d in data], dtype=np.object_)
    tensor.set_data_from_numpy(data, binary_data=not as_json)  # binary: the client's default
    return tensor


def _outputs(spec: str | None) -> list[http.InferRequestedOutput] | None:
    if not spec:
        return None  # the client then asks for every output in binary
    return [
        http.InferRequestedOutput(name.split(":")[0], binary_data=not name.endswith(":json"))
        for name in spec.split(",")
    ]


def _values(result: Any, names: list[str]) -> dict[str, list[Any]]:
    values = {}
    for name in names:
        array = result.as_numpy(name)
        values[name] = [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return values


def infer(url: str, model: str, images: list[str], spec: str | None, as_json: bool) -> None:
    client = http.InferenceServerClient(url.removeprefix("http://"))
    result = client.infer(model, [_input(images, as_json)], outputs=_outputs(spec))
    response = result.get_response()
    outputs = _values(result, [o["name"] for o in response["outputs"]])
    binary = [o["name"] for o in response["outputs"]
              if "binary_data_size" in (o.get("parameters") or {})]  # fmt: skip
    print(json.dumps({"outputs": outputs, "binary": binary}))


def infer_grpc(target: str, model: str, images: list[str], spec: str | None) -> None:
    client = grpc.InferenceServerClient(target)
    tensor = grpc.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(_images(images))
    outputs = [grpc.InferRequestedOutput(name) for name in spec.split(",")] if spec else None
    try:
        result = client.infer(model, [tensor], outputs=outputs)
    except InferenceServerException as e:
        print(json.dumps({"error": e.status(), "message": e.message()}))
        return
    response = result.get_response()
    names = [o.name for o in response.outputs]
    parameters = result.get_response(as_json=True).get("parameters", {})
    raw = len(response.raw_output_contents)
    print(json.dumps({"outputs": _values(result, names), "raw": raw, "parameters": parameters}))


def grpc_metadata(target: str, model: str) -> None:
    print(json.dumps(grpc.InferenceServerClient(target).get_model_metadata(model, as_json=True)))


def body(images: list[str], out: str) -> None:
    request, json_size = http.InferenceServerClient.generate_request_body([_input(images)])
    Path(out).write_bytes(request)
    print(json_size)


def _option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    if name not in args:
        return None, args
    at = args.index(name)
    return args[at + 1], args[:at] + args[at + 2 :]


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
    spec, args = _option(args, "--outputs")
    if command == "infer":
        infer(args[0], args[1], args[2:], spec, as_json)
    elif command == "grpc":
        infer_grpc(args[0], args[1], args[2:], spec)
    elif command == "grpc-metadata":
        grpc_metadata(args[0], args[1])
    else:
        body(args[:-1], args[-1])
