from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.preopen_mode import PreopenMode
from ..types import UNSET, Unset

T = TypeVar("T", bound="PreopenSpec")


@_attrs_define
class PreopenSpec:
    """One directory a Wasm job is given.

    Attributes:
        guest (str): The name the guest sees: an absolute path (`/`, `/data`), no `.`, `..` or empty
            component, at most 255 bytes; each `guest` once. Example: /data.
        dir_ (None | str | Unset): The directory of the job's directory to show there: a relative path (`input`,
            `a/b`) with no `.`, `..` or empty component, at most 255 bytes; created empty if the
            job's files do not make it. Omitted: the job's whole directory. A file `input/x.txt` of
            the job is `/data/x.txt` in the guest with `{"guest": "/data", "dir": "input"}`. Example: input.
        mode (None | PreopenMode | Unset):
    """

    guest: str
    dir_: None | str | Unset = UNSET
    mode: None | PreopenMode | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        guest = self.guest

        dir_: None | str | Unset
        if isinstance(self.dir_, Unset):
            dir_ = UNSET
        else:
            dir_ = self.dir_

        mode: None | str | Unset
        if isinstance(self.mode, Unset):
            mode = UNSET
        elif isinstance(self.mode, PreopenMode):
            mode = self.mode.value
        else:
            mode = self.mode

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "guest": guest,
            }
        )
        if dir_ is not UNSET:
            field_dict["dir"] = dir_
        if mode is not UNSET:
            field_dict["mode"] = mode

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        guest = d.pop("guest")

        def _parse_dir_(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        dir_ = _parse_dir_(d.pop("dir", UNSET))

        def _parse_mode(data: object) -> None | PreopenMode | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                mode_type_0 = PreopenMode(data)

                return mode_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(None | PreopenMode | Unset, data)

        mode = _parse_mode(d.pop("mode", UNSET))

        preopen_spec = cls(
            guest=guest,
            dir_=dir_,
            mode=mode,
        )

        return preopen_spec
