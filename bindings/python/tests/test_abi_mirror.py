"""The ctypes mirror (peftkit._capi) against include/peftkit.h: struct layouts as a C compiler sees
them, every function's prototype, every constant, the version and the defaults of every config."""

import ctypes
import inspect
import subprocess
from ctypes import (
    POINTER,
    c_char,
    c_char_p,
    c_float,
    c_int32,
    c_int64,
    c_size_t,
    c_uint32,
    c_uint64,
    c_void_p,
)

import numpy as np
import peftkit
import pytest
from conftest import HEADER
from header import (
    c_compiler,
    callback_typedef,
    defines,
    functions,
    int_constants,
    structs,
)
from peftkit import _capi

SCALARS = {
    "int32_t": c_int32, "uint32_t": c_uint32, "int64_t": c_int64, "uint64_t": c_uint64,
    "size_t": c_size_t, "float": c_float, "peftkit_status": c_int32,
}


def test_struct_layout_matches_the_c_compiler(tmp_path):
    """sizeof, alignment and the offset and size of every field, from a program compiled against the
    header, equal the ctypes mirrors'."""
    header_structs = structs()
    assert set(header_structs) == set(_capi.STRUCTS), "a header struct has no mirror in _capi.STRUCTS"
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <stdalign.h>', '#include "peftkit.h"',
             "int main(void) {"]
    for s, fields in header_structs.items():
        lines.append(f'    printf("{s} . %zu %zu\\n", sizeof({s}), alignof({s}));')
        for _, f in fields:
            lines.append(f'    printf("{s} {f} %zu %zu\\n", offsetof({s}, {f}), sizeof((({s} *)0)->{f}));')
    lines += ["    return 0;", "}"]
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "layout"
    subprocess.run([c_compiler(), "-std=c11", "-Wall", "-Werror", f"-I{HEADER.parent}", str(src), "-o", str(exe)],
                   check=True)
    c = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout.splitlines():
        s, f, a, b = line.split()
        c[(s, f)] = (int(a), int(b))

    checked = 0
    for s, fields in header_structs.items():
        mirror = _capi.STRUCTS[s]
        assert [f for _, f in fields] == [f for f, _ in mirror._fields_], f"{s}: field names or order differ"
        assert c[(s, ".")] == (ctypes.sizeof(mirror), ctypes.alignment(mirror)), f"{s}: size/alignment"
        for _, f in fields:
            d = getattr(mirror, f)
            got = (d.offset, d.size)
            assert c[(s, f)] == got, f"{s}.{f}: (offset, size) in C {c[(s, f)]}, in ctypes {got}"
            checked += 1
    assert checked >= 45


def test_struct_field_types_match():
    """Each field's ctypes type is the one for its C type (not only of the same size)."""
    for s, fields in structs().items():
        mirror = dict(_capi.STRUCTS[s]._fields_)
        for ctype, f in fields:
            base = ctype.replace("const ", "")
            if base == "peftkit_progress_callback":
                assert mirror[f] is _capi.PROGRESS_CALLBACK, f"{s}.{f}"
            elif base.replace(" ", "") == "void*":
                assert mirror[f] is c_void_p, f"{s}.{f}"
            elif base.replace(" ", "") == "char*":
                assert mirror[f] is ctypes.c_char_p, f"{s}.{f}"
            elif base.replace(" ", "") == "char**":  # an array of strings
                assert mirror[f] == POINTER(ctypes.c_char_p), f"{s}.{f}"
            elif "*" in base:
                assert mirror[f] == POINTER(SCALARS[base.replace("*", "").strip()]), f"{s}.{f}"
            else:
                assert mirror[f] is SCALARS[base], f"{s}.{f}: {ctype} vs {mirror[f]}"


def _expected_ctypes(ctype: str):
    """The ctypes types acceptable for a C parameter or return type."""
    if ctype == "void":
        return {None}
    if ctype == "peftkit_token_callback":
        return {_capi.TOKEN_CALLBACK}
    if ctype == "peftkit_progress_callback":
        return {_capi.PROGRESS_CALLBACK}
    if ctype in SCALARS:
        return {SCALARS[ctype]}
    if ctype == "void *":
        return {c_void_p}
    base = ctype.replace("const ", "").strip()
    stars = base.count("*")
    name = base.replace("*", "").strip()
    if name == "peftkit_model":
        return {c_void_p} if stars == 1 else {POINTER(c_void_p)}
    if name == "char" and stars == 2:
        return {POINTER(c_char_p)}
    if name == "char":
        return {c_char_p} if ctype.startswith("const") else {POINTER(c_char)}
    if name in _capi.STRUCTS:
        return {POINTER(_capi.STRUCTS[name])}
    if name in SCALARS and stars == 1:
        # Arrays are passed by address (c_void_p); single out-parameters as POINTER(scalar).
        return {POINTER(SCALARS[name]), c_void_p}
    if name in SCALARS and stars == 2:
        # An array of arrays (one token array per prompt).
        return {POINTER(POINTER(SCALARS[name]))}
    raise AssertionError(f"unexpected C type {ctype!r}")


def test_every_header_function_has_a_matching_prototype():
    declared = functions()
    assert len(declared) >= 20
    assert set(declared) == set(_capi.PROTOTYPES), (
        f"header-only: {sorted(set(declared) - set(_capi.PROTOTYPES))}, "
        f"mirror-only: {sorted(set(_capi.PROTOTYPES) - set(declared))}")
    for name, (ret, params) in declared.items():
        restype, argtypes = _capi.PROTOTYPES[name]
        assert restype in _expected_ctypes(ret), f"{name}: return {ret} vs {restype}"
        assert len(argtypes) == len(params), f"{name}: {len(params)} parameters vs {len(argtypes)}"
        for i, (p, a) in enumerate(zip(params, argtypes)):
            assert a in _expected_ctypes(p), f"{name} parameter {i}: {p} vs {a}"
        fn = getattr(_capi.lib, name)
        assert fn.restype is restype and list(fn.argtypes) == argtypes


def test_token_callback_typedef():
    ret, params = callback_typedef("peftkit_token_callback")
    assert (ret, params) == ("int32_t", ["int32_t", "void *"])
    cb = _capi.TOKEN_CALLBACK
    assert cb._restype_ is c_int32 and cb._argtypes_ == (c_int32, c_void_p)


def test_progress_callback_typedef():
    ret, params = callback_typedef("peftkit_progress_callback")
    assert (ret, params) == ("int32_t", ["int64_t", "int64_t", "void *"])
    cb = _capi.PROGRESS_CALLBACK
    assert cb._restype_ is c_int32 and cb._argtypes_ == (c_int64, c_int64, c_void_p)


def test_constants_match_the_header():
    header = {k: v for k, v in int_constants().items() if not k.startswith("PEFTKIT_VERSION")}
    assert len(header) >= 20
    for name, value in header.items():
        assert getattr(_capi, name, None) == value, name
    families = {
        "PEFTKIT_ARCH_": peftkit.Architecture, "PEFTKIT_METHOD_": peftkit.Method,
        "PEFTKIT_SCHEDULE_": peftkit.Schedule, "PEFTKIT_FINISH_": peftkit.FinishReason,
        "PEFTKIT_ACTIVATIONS_": peftkit.ActivationMemory,
    }
    for prefix, enum in families.items():
        want = {k[len(prefix):]: v for k, v in header.items() if k.startswith(prefix)}
        assert {m.name: m.value for m in enum} == want, prefix
    errors = {v for k, v in header.items() if k.startswith("PEFTKIT_ERR_")}
    assert set(peftkit.errors.ERROR_CLASSES) == errors
    assert peftkit.IGNORE_INDEX == header["PEFTKIT_IGNORE_INDEX"]


def test_version():
    d = defines()
    want = d["PEFTKIT_VERSION_STRING"].strip('"')
    assert peftkit.__version__ == want
    assert peftkit.library_version() == want
    parts = [int(d[f"PEFTKIT_VERSION_{p}"]) for p in ("MAJOR", "MINOR", "PATCH")]
    assert want == ".".join(map(str, parts))


def _fields(struct):
    return {f: getattr(struct, f) for f, _ in struct._fields_}


def test_python_defaults_equal_the_library_defaults():
    """The defaults of the Python configs are the *_init functions' (so the docs tell no lie)."""
    def same(py, lib_struct, skip=()):
        a, b = _fields(py), _fields(lib_struct)
        for k in a:
            if k not in skip:
                assert a[k] == pytest.approx(b[k]) if isinstance(a[k], float) else a[k] == b[k], k

    same(peftkit.ModelConfig()._to_struct(), _capi.new_struct(_capi.ModelConfigStruct))
    same(peftkit.TrainConfig()._to_struct(), _capi.new_struct(_capi.TrainConfigStruct))

    g = _capi.new_struct(_capi.GenerateConfigStruct)
    sig = inspect.signature(peftkit.Model.generate).parameters
    for f in ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "repetition_penalty", "min_p"):
        assert sig[f].default == pytest.approx(getattr(g, f)), f
    assert sig["stop"].default is None and g.n_stop_tokens == 0 and not g.stop_tokens
    assert sig["stop_strings"].default is None and g.n_stop_strings == 0 and not g.stop_strings


def test_library_rejects_a_wrong_struct_size():
    """Sanity check of the convention the layout test protects: a struct_size that is no version of the
    struct (here: inside a field) is refused, not misread."""
    s = peftkit.TrainConfig()._to_struct()
    s.struct_size = 6
    with peftkit.Model.create() as m:
        m.attach_adapter("a")
        m.set_active_adapter("a")
        ids = np.zeros(4, dtype=np.int32)
        status = _capi.lib.peftkit_train_step(m._handle, ids.ctypes.data, None, 1, 4, ctypes.byref(s), None)
        assert status == _capi.PEFTKIT_ERR_INVALID_ARGUMENT
        assert "struct_size" in _capi.last_error()


def test_an_older_mirror_is_read_with_defaults_for_the_rest():
    """The caller's size is the authority: a mirror without its last field (an older package) works, and the
    library writes nothing past it."""
    fields = _capi.TrainResultStruct._fields_[:-1]
    Older = type("OlderTrainResult", (ctypes.Structure,), {"_fields_": fields})
    buf = (ctypes.c_char * (ctypes.sizeof(Older) + 16))()
    ctypes.memset(buf, 0x5A, len(buf))
    r = Older.from_buffer(buf)
    r.struct_size = ctypes.sizeof(Older)
    with peftkit.Model.create() as m:
        m.attach_adapter("a")
        m.set_active_adapter("a")
        ids = np.arange(8, dtype=np.int32)
        tc = peftkit.TrainConfig()._to_struct()
        status = _capi.lib.peftkit_train_step(m._handle, ids.ctypes.data, None, 1, 8, ctypes.byref(tc),
                                              ctypes.cast(buf, ctypes.POINTER(_capi.TrainResultStruct)))
        assert status == _capi.PEFTKIT_OK, _capi.last_error()
    assert r.step == 1 and r.loss > 0
    assert buf.raw[ctypes.sizeof(Older):] == b"\x5a" * 16