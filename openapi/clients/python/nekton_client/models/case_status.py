from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.case_state import CaseState

if TYPE_CHECKING:
    from ..models.case_result import CaseResult


T = TypeVar("T", bound="CaseStatus")


@_attrs_define
class CaseStatus:
    """A case's entry in `GET /v1/jobs/{id}/cases`.

    Attributes:
        index (int):
        name (str):
        result (CaseResult | None):
        state (CaseState): Where a case is.
    """

    index: int
    name: str
    result: CaseResult | None
    state: CaseState
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.case_result import CaseResult

        index = self.index

        name = self.name

        result: dict[str, Any] | None
        if isinstance(self.result, CaseResult):
            result = self.result.to_dict()
        else:
            result = self.result

        state = self.state.value

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "index": index,
                "name": name,
                "result": result,
                "state": state,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.case_result import CaseResult

        d = dict(src_dict)
        index = d.pop("index")

        name = d.pop("name")

        def _parse_result(data: object) -> CaseResult | None:
            if data is None:
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                result_type_0 = CaseResult.from_dict(data)

                return result_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(CaseResult | None, data)

        result = _parse_result(d.pop("result"))

        state = CaseState(d.pop("state"))

        case_status = cls(
            index=index,
            name=name,
            result=result,
            state=state,
        )

        case_status.additional_properties = d
        return case_status

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
