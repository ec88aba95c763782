"""Triton's HTTP client, as a user runs it; started by the tests with .tools/client's Python.

oip_client.py infer URL MODEL IMAGE... [--outputs NAME[:json],...]
    prints {"outputs": {name: values}, "binary": [names that came back binary]}
oip_client.py body IMAGE... OUT   writes the client's request body; prints its JSON length
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tritonclient import http


def _input(images: list[str]) -> http.InferInput:
    data = np.array([Path(p).read_bytes() for p in images], dtype=np.object_)
    tensor = http.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=True)  # the client's default for BYTES
    return tensor


def _outputs(spec: str | None) -> list[http.InferRequestedOutput] | None:
    if not spec:
        return None  # the client then asks for every output in binary
    return [
        http.InferRequestedOutput(name.split(":")[0], binary_data=not name.endswith(":json"))
        for name in spec.split(",")
    ]


def infer(url: str, model: str, images: list[str], spec: str | None) -> None:
    client = http.InferenceServerClient(url.removeprefix("http://"))
    result = client.infer(model, [_input(images)], outputs=_outputs(spec))
    response = result.get_response()
    outputs = {}
    for output in response["outputs"]:
        values = result.as_numpy(output["name"])
        outputs[output["name"]] = [
            v.decode() if isinstance(v, bytes) else v for v in values.tolist()
        ]
    binary = [o["name"] for o in response["outputs"]
              if "binary_data_size" in (o.get("parameters") or {})]  # fmt: skip
    print(json.dumps({"outputs": outputs, "binary": binary}))


def body(images: list[str], out: str) -> None:
    request, json_size = http.InferenceServerClient.generate_request_body([_input(images)])
    Path(out).write_bytes(request)
    print(json_size)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    spec = None
    if "--outputs" in args:
        at = args.index("--outputs")
        spec, args = args[at + 1], args[:at]
    if command == "infer":
        infer(args[0], args[1], args[2:], spec)
    else:
        body(args[:-1], args[-1])
