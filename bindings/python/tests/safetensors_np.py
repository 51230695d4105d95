"""A minimal safetensors reader on numpy (for the tests: no dependency on the safetensors package).

File layout: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:
[begin, end]}, optional "__metadata__"}, then the data block; offsets are relative to the data block.
"""

import json
import struct
from pathlib import Path
from typing import Union

import numpy as np

DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
    "BOOL": "?",
}


def read_safetensors(path: Union[str, Path]) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file, as numpy arrays of the stored dtype and shape. BF16
    tensors are widened to float32."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    data = memoryview(raw)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        dtype = info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(data[begin:end], dtype="<u2").astype(np.uint32) << 16
            arr = bits.view(np.float32)
        else:
            arr = np.frombuffer(data[begin:end], dtype=DTYPES[dtype])
        out[name] = arr.reshape(shape).copy()
    return out
