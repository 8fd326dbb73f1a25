from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.preopen_spec import PreopenSpec


T = TypeVar("T", bound="WasmSpec")


@_attrs_define
class WasmSpec:
    """A Wasm job's options.

    Attributes:
        preopens (list[PreopenSpec]): The directories the guest is given, in this order (the first is descriptor 3 in
            WASI
            preview 1; a component gets them from `wasi:filesystem/preopens` in this order), at most
            16. Each is a directory of the job's directory — which holds the job's `files` and is
            capped by `limits.disk_bytes` — shown at a guest path, read-write or read-only. `[]`
            gives the guest no directory at all. Omitted: the job's whole directory read-write at
            `/`, the layout WASI programs expect (`wasmtime --dir <dir>::/`); a preview 1 module
            that imports neither `fd_prestat_get` nor any `path_*` function, and has no files,
            gets none (it could not use it). Everything in the job's directory is gone after the
            job, except artifacts. Example: [{'dir': 'input', 'guest': '/data', 'mode': 'ro'}, {'dir': 'out', 'guest':
            '/out'}].
    """

    preopens: list[PreopenSpec]

    def to_dict(self) -> dict[str, Any]:
        preopens = []
        for preopens_item_data in self.preopens:
            preopens_item = preopens_item_data.to_dict()
            preopens.append(preopens_item)

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "preopens": preopens,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.preopen_spec import PreopenSpec

        d = dict(src_dict)
        preopens = []
        _preopens = d.pop("preopens")
        for preopens_item_data in _preopens:
            preopens_item = PreopenSpec.from_dict(preopens_item_data)

            preopens.append(preopens_item)

        wasm_spec = cls(
            preopens=preopens,
        )

        return wasm_spec
