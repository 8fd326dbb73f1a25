from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.compare_mode import CompareMode
from ..types import UNSET, Unset

T = TypeVar("T", bound="Compare")


@_attrs_define
class Compare:
    """A comparison mode with its tolerances.

    Attributes:
        abs_tolerance (float | None | Unset): `float` only: numbers within this absolute difference are equal. Default
            1e-6.
        mode (CompareMode | Unset): How a case's stdout is compared with the expected one.
        rel_tolerance (float | None | Unset): `float` only: numbers within this relative difference (of the expected
            value) are equal.
            Default 1e-6.
    """

    abs_tolerance: float | None | Unset = UNSET
    mode: CompareMode | Unset = UNSET
    rel_tolerance: float | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        abs_tolerance: float | None | Unset
        if isinstance(self.abs_tolerance, Unset):
            abs_tolerance = UNSET
        else:
            abs_tolerance = self.abs_tolerance

        mode: str | Unset = UNSET
        if not isinstance(self.mode, Unset):
            mode = self.mode.value

        rel_tolerance: float | None | Unset
        if isinstance(self.rel_tolerance, Unset):
            rel_tolerance = UNSET
        else:
            rel_tolerance = self.rel_tolerance

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if abs_tolerance is not UNSET:
            field_dict["abs_tolerance"] = abs_tolerance
        if mode is not UNSET:
            field_dict["mode"] = mode
        if rel_tolerance is not UNSET:
            field_dict["rel_tolerance"] = rel_tolerance

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)

        def _parse_abs_tolerance(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        abs_tolerance = _parse_abs_tolerance(d.pop("abs_tolerance", UNSET))

        _mode = d.pop("mode", UNSET)
        mode: CompareMode | Unset
        if isinstance(_mode, Unset):
            mode = UNSET
        else:
            mode = CompareMode(_mode)

        def _parse_rel_tolerance(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        rel_tolerance = _parse_rel_tolerance(d.pop("rel_tolerance", UNSET))

        compare = cls(
            abs_tolerance=abs_tolerance,
            mode=mode,
            rel_tolerance=rel_tolerance,
        )

        return compare
