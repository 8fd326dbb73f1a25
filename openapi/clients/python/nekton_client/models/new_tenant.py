from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

T = TypeVar("T", bound="NewTenant")


@_attrs_define
class NewTenant:
    """A new tenant: its name and, optionally, its settings.

    Attributes:
        id (str): 1–63 characters of a-z, 0-9, `-`, `_`.
        allow_bridge (bool | None | Unset): Whether jobs may use `network: bridge`.
        max_cpu_time_ms (int | None | Unset):
        max_memory_bytes (int | None | Unset):
        max_output_bytes (int | None | Unset):
        max_queued (int | None | Unset): Jobs waiting (queued or scheduled for a retry) at once.
        max_running (int | None | Unset): Jobs running at once (null: no cap).
        max_wall_time_ms (int | None | Unset):
        submit_burst (int | None | Unset): Submissions allowed at once above the rate.
        submit_rate (float | None | Unset): Submissions per second.
        weight (int | None | Unset): Share of the workers when several tenants have work (1–1000).
    """

    id: str
    allow_bridge: bool | None | Unset = UNSET
    max_cpu_time_ms: int | None | Unset = UNSET
    max_memory_bytes: int | None | Unset = UNSET
    max_output_bytes: int | None | Unset = UNSET
    max_queued: int | None | Unset = UNSET
    max_running: int | None | Unset = UNSET
    max_wall_time_ms: int | None | Unset = UNSET
    submit_burst: int | None | Unset = UNSET
    submit_rate: float | None | Unset = UNSET
    weight: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        id = self.id

        allow_bridge: bool | None | Unset
        if isinstance(self.allow_bridge, Unset):
            allow_bridge = UNSET
        else:
            allow_bridge = self.allow_bridge

        max_cpu_time_ms: int | None | Unset
        if isinstance(self.max_cpu_time_ms, Unset):
            max_cpu_time_ms = UNSET
        else:
            max_cpu_time_ms = self.max_cpu_time_ms

        max_memory_bytes: int | None | Unset
        if isinstance(self.max_memory_bytes, Unset):
            max_memory_bytes = UNSET
        else:
            max_memory_bytes = self.max_memory_bytes

        max_output_bytes: int | None | Unset
        if isinstance(self.max_output_bytes, Unset):
            max_output_bytes = UNSET
        else:
            max_output_bytes = self.max_output_bytes

        max_queued: int | None | Unset
        if isinstance(self.max_queued, Unset):
            max_queued = UNSET
        else:
            max_queued = self.max_queued

        max_running: int | None | Unset
        if isinstance(self.max_running, Unset):
            max_running = UNSET
        else:
            max_running = self.max_running

        max_wall_time_ms: int | None | Unset
        if isinstance(self.max_wall_time_ms, Unset):
            max_wall_time_ms = UNSET
        else:
            max_wall_time_ms = self.max_wall_time_ms

        submit_burst: int | None | Unset
        if isinstance(self.submit_burst, Unset):
            submit_burst = UNSET
        else:
            submit_burst = self.submit_burst

        submit_rate: float | None | Unset
        if isinstance(self.submit_rate, Unset):
            submit_rate = UNSET
        else:
            submit_rate = self.submit_rate

        weight: int | None | Unset
        if isinstance(self.weight, Unset):
            weight = UNSET
        else:
            weight = self.weight

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "id": id,
            }
        )
        if allow_bridge is not UNSET:
            field_dict["allow_bridge"] = allow_bridge
        if max_cpu_time_ms is not UNSET:
            field_dict["max_cpu_time_ms"] = max_cpu_time_ms
        if max_memory_bytes is not UNSET:
            field_dict["max_memory_bytes"] = max_memory_bytes
        if max_output_bytes is not UNSET:
            field_dict["max_output_bytes"] = max_output_bytes
        if max_queued is not UNSET:
            field_dict["max_queued"] = max_queued
        if max_running is not UNSET:
            field_dict["max_running"] = max_running
        if max_wall_time_ms is not UNSET:
            field_dict["max_wall_time_ms"] = max_wall_time_ms
        if submit_burst is not UNSET:
            field_dict["submit_burst"] = submit_burst
        if submit_rate is not UNSET:
            field_dict["submit_rate"] = submit_rate
        if weight is not UNSET:
            field_dict["weight"] = weight

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        id = d.pop("id")

        def _parse_allow_bridge(data: object) -> bool | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(bool | None | Unset, data)

        allow_bridge = _parse_allow_bridge(d.pop("allow_bridge", UNSET))

        def _parse_max_cpu_time_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_cpu_time_ms = _parse_max_cpu_time_ms(d.pop("max_cpu_time_ms", UNSET))

        def _parse_max_memory_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_memory_bytes = _parse_max_memory_bytes(d.pop("max_memory_bytes", UNSET))

        def _parse_max_output_bytes(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_output_bytes = _parse_max_output_bytes(d.pop("max_output_bytes", UNSET))

        def _parse_max_queued(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_queued = _parse_max_queued(d.pop("max_queued", UNSET))

        def _parse_max_running(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_running = _parse_max_running(d.pop("max_running", UNSET))

        def _parse_max_wall_time_ms(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        max_wall_time_ms = _parse_max_wall_time_ms(d.pop("max_wall_time_ms", UNSET))

        def _parse_submit_burst(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        submit_burst = _parse_submit_burst(d.pop("submit_burst", UNSET))

        def _parse_submit_rate(data: object) -> float | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(float | None | Unset, data)

        submit_rate = _parse_submit_rate(d.pop("submit_rate", UNSET))

        def _parse_weight(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        weight = _parse_weight(d.pop("weight", UNSET))

        new_tenant = cls(
            id=id,
            allow_bridge=allow_bridge,
            max_cpu_time_ms=max_cpu_time_ms,
            max_memory_bytes=max_memory_bytes,
            max_output_bytes=max_output_bytes,
            max_queued=max_queued,
            max_running=max_running,
            max_wall_time_ms=max_wall_time_ms,
            submit_burst=submit_burst,
            submit_rate=submit_rate,
            weight=weight,
        )

        return new_tenant
