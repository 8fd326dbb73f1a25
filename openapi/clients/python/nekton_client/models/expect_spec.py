from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.encoding import Encoding
from ..types import UNSET, Unset

T = TypeVar("T", bound="ExpectSpec")


@_attrs_define
class ExpectSpec:
    """What a case must produce.

    Attributes:
        exit_code (int | None | Unset): The exit code the program must end with. Default 0; another is `runtime_error`.
        stdout (None | str | Unset): The expected stdout, compared by the suite's `compare` mode (or given to the
            checker).
            Omitted: any output is accepted (only the exit code counts).
        stdout_encoding (Encoding | None | Unset):
    """

    exit_code: int | None | Unset = UNSET
    stdout: None | str | Unset = UNSET
    stdout_encoding: Encoding | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        exit_code: int | None | Unset
        if isinstance(self.exit_code, Unset):
            exit_code = UNSET
        else:
            exit_code = self.exit_code

        stdout: None | str | Unset
        if isinstance(self.stdout, Unset):
            stdout = UNSET
        else:
            stdout = self.stdout

        stdout_encoding: None | str | Unset
        if isinstance(self.stdout_encoding, Unset):
            stdout_encoding = UNSET
        elif isinstance(self.stdout_encoding, Encoding):
            stdout_encoding = self.stdout_encoding.value
        else:
            stdout_encoding = self.stdout_encoding

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if exit_code is not UNSET:
            field_dict["exit_code"] = exit_code
        if stdout is not UNSET:
            field_dict["stdout"] = stdout
        if stdout_encoding is not UNSET:
            field_dict["stdout_encoding"] = stdout_encoding

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)

        def _parse_exit_code(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        exit_code = _parse_exit_code(d.pop("exit_code", UNSET))

        def _parse_stdout(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        stdout = _parse_stdout(d.pop("stdout", UNSET))

        def _parse_stdout_encoding(data: object) -> Encoding | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                stdout_encoding_type_0 = Encoding(data)

                return stdout_encoding_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Encoding | None | Unset, data)

        stdout_encoding = _parse_stdout_encoding(d.pop("stdout_encoding", UNSET))

        expect_spec = cls(
            exit_code=exit_code,
            stdout=stdout,
            stdout_encoding=stdout_encoding,
        )

        return expect_spec
