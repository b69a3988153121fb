"""JSON bodies and answers of the gateway APIs, as UTF-8 bytes, encoded and decoded cheaply: every send and
every status read passes here, on the threads (or the event loop) that make the requests.

``msgspec`` does it when it can be imported (every Airflow 3 install has it: the Task SDK needs it), else
the standard library's ``json``. Both give the same values: dicts, lists, strings, numbers, booleans and
``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_encode: Callable[[Any], bytes]
_decode: Callable[[bytes], Any]
try:
    import msgspec
except ImportError:  # pragma: no cover - msgspec comes with the Airflow Task SDK
    import json

    def _encode_with_json(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()

    _encode, _decode = _encode_with_json, json.loads
else:
    # Neither keeps state between calls, and neither lets go of the interpreter lock inside one: one each
    # serves every thread.
    _encode, _decode = msgspec.json.Encoder().encode, msgspec.json.Decoder().decode


def encode_json(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON bytes."""
    return _encode(value)


def decode_json(data: bytes) -> Any:
    """The value of the JSON document ``data``; ``ValueError`` if it is not one."""
    return _decode(data)
