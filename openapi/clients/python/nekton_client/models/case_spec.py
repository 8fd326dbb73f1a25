from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.encoding import Encoding
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.compare import Compare
    from ..models.expect_spec import ExpectSpec
    from ..models.input_file_spec import InputFileSpec
    from ..models.limits_spec import LimitsSpec


T = TypeVar("T", bound="CaseSpec")


@_attrs_define
class CaseSpec:
    """One test case.

    Attributes:
        name (str): Unique within the suite: 1–128 characters, no control characters or `/`.
        args (list[str] | None | Unset): Replaces the job's `args` for this case.
        compare (Compare | None | Unset):
        expect (ExpectSpec | Unset): What a case must produce.
        files (list[InputFileSpec] | Unset): More input files for this case (beside the build's result).
        limits (LimitsSpec | None | Unset):
        stdin (None | str | Unset):
        stdin_encoding (Encoding | None | Unset):
        weight (int | None | Unset): Points for the score when accepted. Default 1.
    """

    name: str
    args: list[str] | None | Unset = UNSET
    compare: Compare | None | Unset = UNSET
    expect: ExpectSpec | Unset = UNSET
    files: list[InputFileSpec] | Unset = UNSET
    limits: LimitsSpec | None | Unset = UNSET
    stdin: None | str | Unset = UNSET
    stdin_encoding: Encoding | None | Unset = UNSET
    weight: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.compare import Compare
        from ..models.limits_spec import LimitsSpec

        name = self.name

        args: list[str] | None | Unset
        if isinstance(self.args, Unset):
            args = UNSET
        elif isinstance(self.args, list):
            args = self.args

        else:
            args = self.args

        compare: dict[str, Any] | None | Unset
        if isinstance(self.compare, Unset):
            compare = UNSET
        elif isinstance(self.compare, Compare):
            compare = self.compare.to_dict()
        else:
            compare = self.compare

        expect: dict[str, Any] | Unset = UNSET
        if not isinstance(self.expect, Unset):
            expect = self.expect.to_dict()

        files: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.files, Unset):
            files = []
            for files_item_data in self.files:
                files_item = files_item_data.to_dict()
                files.append(files_item)

        limits: dict[str, Any] | None | Unset
        if isinstance(self.limits, Unset):
            limits = UNSET
        elif isinstance(self.limits, LimitsSpec):
            limits = self.limits.to_dict()
        else:
            limits = self.limits

        stdin: None | str | Unset
        if isinstance(self.stdin, Unset):
            stdin = UNSET
        else:
            stdin = self.stdin

        stdin_encoding: None | str | Unset
        if isinstance(self.stdin_encoding, Unset):
            stdin_encoding = UNSET
        elif isinstance(self.stdin_encoding, Encoding):
            stdin_encoding = self.stdin_encoding.value
        else:
            stdin_encoding = self.stdin_encoding

        weight: int | None | Unset
        if isinstance(self.weight, Unset):
            weight = UNSET
        else:
            weight = self.weight

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "name": name,
            }
        )
        if args is not UNSET:
            field_dict["args"] = args
        if compare is not UNSET:
            field_dict["compare"] = compare
        if expect is not UNSET:
            field_dict["expect"] = expect
        if files is not UNSET:
            field_dict["files"] = files
        if limits is not UNSET:
            field_dict["limits"] = limits
        if stdin is not UNSET:
            field_dict["stdin"] = stdin
        if stdin_encoding is not UNSET:
            field_dict["stdin_encoding"] = stdin_encoding
        if weight is not UNSET:
            field_dict["weight"] = weight

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.compare import Compare
        from ..models.expect_spec import ExpectSpec
        from ..models.input_file_spec import InputFileSpec
        from ..models.limits_spec import LimitsSpec

        d = dict(src_dict)
        name = d.pop("name")

        def _parse_args(data: object) -> list[str] | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, list):
                    raise TypeError()
                args_type_0 = cast(list[str], data)

                return args_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(list[str] | None | Unset, data)

        args = _parse_args(d.pop("args", UNSET))

        def _parse_compare(data: object) -> Compare | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                compare_type_0 = Compare.from_dict(data)

                return compare_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Compare | None | Unset, data)

        compare = _parse_compare(d.pop("compare", UNSET))

        _expect = d.pop("expect", UNSET)
        expect: ExpectSpec | Unset
        if isinstance(_expect, Unset):
            expect = UNSET
        else:
            expect = ExpectSpec.from_dict(_expect)

        _files = d.pop("files", UNSET)
        files: list[InputFileSpec] | Unset = UNSET
        if _files is not UNSET:
            files = []
            for files_item_data in _files:
                files_item = InputFileSpec.from_dict(files_item_data)

                files.append(files_item)

        def _parse_limits(data: object) -> LimitsSpec | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                limits_type_0 = LimitsSpec.from_dict(data)

                return limits_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(LimitsSpec | None | Unset, data)

        limits = _parse_limits(d.pop("limits", UNSET))

        def _parse_stdin(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        stdin = _parse_stdin(d.pop("stdin", UNSET))

        def _parse_stdin_encoding(data: object) -> Encoding | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                stdin_encoding_type_0 = Encoding(data)

                return stdin_encoding_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(Encoding | None | Unset, data)

        stdin_encoding = _parse_stdin_encoding(d.pop("stdin_encoding", UNSET))

        def _parse_weight(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        weight = _parse_weight(d.pop("weight", UNSET))

        case_spec = cls(
            name=name,
            args=args,
            compare=compare,
            expect=expect,
            files=files,
            limits=limits,
            stdin=stdin,
            stdin_encoding=stdin_encoding,
            weight=weight,
        )

        return case_spec
