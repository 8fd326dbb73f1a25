from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.usage_report_by_outcome import UsageReportByOutcome
    from ..models.usage_totals import UsageTotals


T = TypeVar("T", bound="UsageReport")


@_attrs_define
class UsageReport:
    """Usage of a tenant: totals and the same split by the attempts' outcome reason.

    Attributes:
        by_outcome (UsageReportByOutcome): Keyed by outcome reason (`exited`, `wall_timeout`, `cancelled`, ...).
        from_ (datetime.datetime): Start of the range (inclusive; usage is kept per hour, so bounds round down to the
            hour).
        tenant (str):
        to (datetime.datetime): End of the range (exclusive).
        total (UsageTotals): Usage of one tenant over a time range, for billing.
    """

    by_outcome: UsageReportByOutcome
    from_: datetime.datetime
    tenant: str
    to: datetime.datetime
    total: UsageTotals
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        by_outcome = self.by_outcome.to_dict()

        from_ = self.from_.isoformat()

        tenant = self.tenant

        to = self.to.isoformat()

        total = self.total.to_dict()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "by_outcome": by_outcome,
                "from": from_,
                "tenant": tenant,
                "to": to,
                "total": total,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.usage_report_by_outcome import UsageReportByOutcome
        from ..models.usage_totals import UsageTotals

        d = dict(src_dict)
        by_outcome = UsageReportByOutcome.from_dict(d.pop("by_outcome"))

        from_ = datetime.datetime.fromisoformat(d.pop("from"))

        tenant = d.pop("tenant")

        to = datetime.datetime.fromisoformat(d.pop("to"))

        total = UsageTotals.from_dict(d.pop("total"))

        usage_report = cls(
            by_outcome=by_outcome,
            from_=from_,
            tenant=tenant,
            to=to,
            total=total,
        )

        usage_report.additional_properties = d
        return usage_report

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
