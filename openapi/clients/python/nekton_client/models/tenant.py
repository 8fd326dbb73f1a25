from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="Tenant")


@_attrs_define
class Tenant:
    """A tenant and its quotas. A quota that is absent (null) does not apply.

    Attributes:
        allow_bridge (bool): Whether jobs may use `network: bridge`.
        created_at (datetime.datetime):
        id (str):
        max_cpu_time_ms (int | None):
        max_memory_bytes (int | None): Per-job maxima, below the operator's: a job asking for more is refused with 422.
        max_output_bytes (int | None):
        max_queued (int | None): Jobs of this tenant waiting (queued or scheduled for a retry). A submission that would
            go
            past it is refused whole with 429.
        max_running (int | None): Jobs of this tenant running at once.
        max_wall_time_ms (int | None):
        submit_burst (int | None): Submissions allowed at once above the rate (default: the rate, at least 1).
        submit_rate (float | None): Sustained submissions per second (a token bucket; 429 with Retry-After past it).
        updated_at (datetime.datetime):
        weight (int): Share of the workers when several tenants have work (1–1000; default 1).
    """

    allow_bridge: bool
    created_at: datetime.datetime
    id: str
    max_cpu_time_ms: int | None
    max_memory_bytes: int | None
    max_output_bytes: int | None
    max_queued: int | None
    max_running: int | None
    max_wall_time_ms: int | None
    submit_burst: int | None
    submit_rate: float | None
    updated_at: datetime.datetime
    weight: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        allow_bridge = self.allow_bridge

        created_at = self.created_at.isoformat()

        id = self.id

        max_cpu_time_ms: int | None
        max_cpu_time_ms = self.max_cpu_time_ms

        max_memory_bytes: int | None
        max_memory_bytes = self.max_memory_bytes

        max_output_bytes: int | None
        max_output_bytes = self.max_output_bytes

        max_queued: int | None
        max_queued = self.max_queued

        max_running: int | None
        max_running = self.max_running

        max_wall_time_ms: int | None
        max_wall_time_ms = self.max_wall_time_ms

        submit_burst: int | None
        submit_burst = self.submit_burst

        submit_rate: float | None
        submit_rate = self.submit_rate

        updated_at = self.updated_at.isoformat()

        weight = self.weight

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "allow_bridge": allow_bridge,
                "created_at": created_at,
                "id": id,
                "max_cpu_time_ms": max_cpu_time_ms,
                "max_memory_bytes": max_memory_bytes,
                "max_output_bytes": max_output_bytes,
                "max_queued": max_queued,
                "max_running": max_running,
                "max_wall_time_ms": max_wall_time_ms,
                "submit_burst": submit_burst,
                "submit_rate": submit_rate,
                "updated_at": updated_at,
                "weight": weight,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        allow_bridge = d.pop("allow_bridge")

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        id = d.pop("id")

        def _parse_max_cpu_time_ms(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        max_cpu_time_ms = _parse_max_cpu_time_ms(d.pop("max_cpu_time_ms"))

        def _parse_max_memory_bytes(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        max_memory_bytes = _parse_max_memory_bytes(d.pop("max_memory_bytes"))

        def _parse_max_output_bytes(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        max_output_bytes = _parse_max_output_bytes(d.pop("max_output_bytes"))

        def _parse_max_queued(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        max_queued = _parse_max_queued(d.pop("max_queued"))

        def _parse_max_running(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        max_running = _parse_max_running(d.pop("max_running"))

        def _parse_max_wall_time_ms(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        max_wall_time_ms = _parse_max_wall_time_ms(d.pop("max_wall_time_ms"))

        def _parse_submit_burst(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        submit_burst = _parse_submit_burst(d.pop("submit_burst"))

        def _parse_submit_rate(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        submit_rate = _parse_submit_rate(d.pop("submit_rate"))

        updated_at = datetime.datetime.fromisoformat(d.pop("updated_at"))

        weight = d.pop("weight")

        tenant = cls(
            allow_bridge=allow_bridge,
            created_at=created_at,
            id=id,
            max_cpu_time_ms=max_cpu_time_ms,
            max_memory_bytes=max_memory_bytes,
            max_output_bytes=max_output_bytes,
            max_queued=max_queued,
            max_running=max_running,
            max_wall_time_ms=max_wall_time_ms,
            submit_burst=submit_burst,
            submit_rate=submit_rate,
            updated_at=updated_at,
            weight=weight,
        )

        tenant.additional_properties = d
        return tenant

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
