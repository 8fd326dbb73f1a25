from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.encoding import Encoding
from ..types import UNSET, Unset

T = TypeVar("T", bound="InputFileSpec")


@_attrs_define
class InputFileSpec:
    """A file placed in the job's sandbox before it starts: for Wasm jobs below the read-write
    directory preopened as `/`, for containers below the working directory.

        Attributes:
            content (str):
            path (str): Relative path, e.g. `input/case1.txt`; no `..`, not absolute.
            encoding (Encoding | None | Unset):
            mode (int | None | Unset): Unix permission bits (e.g. 493 = 0o755). Default 0o644.
    """

    content: str
    path: str
    encoding: Encoding | None | Unset = UNSET
    mode: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        content = self.content

        path = self.path

        encoding: None | str | Unset
        if isinstance(self.encoding, Unset):
            encoding = UNSET
        elif isinstance(self.encoding, Encoding):
            encoding = self.encoding.value
        else:
            encoding = self.encoding

        mode: int | None | Unset
        if isinstance(self.mode, Unset):
            mode = UNSET
        else:
            mode = self.mode

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "content": content,
                "path": path,
            }
        )
        if encoding is not UNSET:
            field_dict["encoding"] = encoding
        if mode is not UNSET:
            field_dict["mode"] = mode

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        content = d.pop("content")

        path = d.pop("path")

        def _parse_encoding(data: object) -> Encoding | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                encoding_type_0 = Encoding(data)

                return encoding_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Encoding | None | Unset, data)

        encoding = _parse_encoding(d.pop("encoding", UNSET))

        def _parse_mode(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        mode = _parse_mode(d.pop("mode", UNSET))

        input_file_spec = cls(
            content=content,
            path=path,
            encoding=encoding,
            mode=mode,
        )

        return input_file_spec
