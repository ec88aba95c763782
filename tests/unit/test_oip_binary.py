"""The binary tensor extension's parsing and encoding (the real client: tests/integration)."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest

from dermaops.serving.binary import BinaryFormatError, Wanted, binary_response, json_request


def binary_body(
    items: list[bytes], parameters: dict[str, object] | None = None
) -> tuple[bytes, int]:
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    header = {"inputs": [{"name": "image", "shape": [len(items)], "datatype": "BYTES",
                          "parameters": {"binary_data_size": len(raw)}}],
              "parameters": parameters or {}}  # fmt: skip
    encoded = json.dumps(header).encode()
    return encoded + raw, len(encoded)


def test_bytes_elements_become_base64_and_the_wanted_outputs_are_kept() -> None:
    body, length = binary_body([b"\xff\xd8jpeg", b""], {"binary_data_output": True})
    request, wanted = json_request(body, length)
    tensor = json.loads(request)["inputs"][0]
    assert [base64.b64decode(d) for d in tensor["data"]] == [b"\xff\xd8jpeg", b""]
    assert "binary_data_size" not in tensor["parameters"]
    assert wanted == Wanted(default=True)


@pytest.mark.parametrize(
    ("cut", "message"),
    [(1, "bytes after the last tensor"), (-3, "runs past the body"), (-200, "not an inference")],
)
def test_sizes_that_do_not_add_up_are_refused(cut: int, message: str) -> None:
    body, length = binary_body([b"abcdef"])
    if cut > 0:
        body += b"x" * cut
    elif cut == -200:
        length = 5
    else:
        body = body[:cut]
    with pytest.raises(BinaryFormatError, match=message):
        json_request(body, length)


def test_a_cut_element_is_refused() -> None:
    raw = struct.pack("<I", 10) + b"abc"
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1],
              "parameters": {"binary_data_size": len(raw)}}  # fmt: skip
    header = json.dumps({"inputs": [tensor]}).encode()
    with pytest.raises(BinaryFormatError, match="element 0 is cut"):
        json_request(header + raw, len(header))


def test_outputs_are_moved_after_the_header_as_the_client_asked() -> None:
    answer = {"outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["mel"]},
        {"name": "melanoma", "datatype": "BOOL", "shape": [1], "data": [True], "parameters": None},
    ]}  # fmt: skip
    body, length = binary_response(answer, Wanted(default=True, by_name={"label": False}))
    header = json.loads(body[:length])
    assert [o.get("data") for o in header["outputs"]] == [None, ["mel"], None]
    tail = body[length:]
    assert np.frombuffer(tail[:8], "<f4").tolist() == [0.25, 0.75] and tail[8:] == b"\x01"
