from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="UsageTotals")


@_attrs_define
class UsageTotals:
    """Usage of one tenant over a time range, for billing.

    Attributes:
        attempts (int): Attempts that ended in the range (a retried job counts each attempt).
        cpu_seconds (float): CPU time (user + system), seconds.
        jobs_cancelled (int):
        jobs_error (int):
        jobs_failed (int):
        jobs_succeeded (int): Jobs that reached a final state in the range, by state.
        memory_byte_seconds (float): Peak memory × wall time, byte-seconds.
        network_rx_bytes (int):
        network_tx_bytes (int):
        output_bytes (int): Output kept (stdout + stderr), bytes.
        wall_seconds (float): Wall time of the attempts, seconds.
    """

    attempts: int
    cpu_seconds: float
    jobs_cancelled: int
    jobs_error: int
    jobs_failed: int
    jobs_succeeded: int
    memory_byte_seconds: float
    network_rx_bytes: int
    network_tx_bytes: int
    output_bytes: int
    wall_seconds: float
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        attempts = self.attempts

        cpu_seconds = self.cpu_seconds

        jobs_cancelled = self.jobs_cancelled

        jobs_error = self.jobs_error

        jobs_failed = self.jobs_failed

        jobs_succeeded = self.jobs_succeeded

        memory_byte_seconds = self.memory_byte_seconds

        network_rx_bytes = self.network_rx_bytes

        network_tx_bytes = self.network_tx_bytes

        output_bytes = self.output_bytes

        wall_seconds = self.wall_seconds

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempts": attempts,
                "cpu_seconds": cpu_seconds,
                "jobs_cancelled": jobs_cancelled,
                "jobs_error": jobs_error,
                "jobs_failed": jobs_failed,
                "jobs_succeeded": jobs_succeeded,
                "memory_byte_seconds": memory_byte_seconds,
                "network_rx_bytes": network_rx_bytes,
                "network_tx_bytes": network_tx_bytes,
                "output_bytes": output_bytes,
                "wall_seconds": wall_seconds,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        attempts = d.pop("attempts")

        cpu_seconds = d.pop("cpu_seconds")

        jobs_cancelled = d.pop("jobs_cancelled")

        jobs_error = d.pop("jobs_error")

        jobs_failed = d.pop("jobs_failed")

        jobs_succeeded = d.pop("jobs_succeeded")

        memory_byte_seconds = d.pop("memory_byte_seconds")

        network_rx_bytes = d.pop("network_rx_bytes")

        network_tx_bytes = d.pop("network_tx_bytes")

        output_bytes = d.pop("output_bytes")

        wall_seconds = d.pop("wall_seconds")

        usage_totals = cls(
            attempts=attempts,
            cpu_seconds=cpu_seconds,
            jobs_cancelled=jobs_cancelled,
            jobs_error=jobs_error,
            jobs_failed=jobs_failed,
            jobs_succeeded=jobs_succeeded,
            memory_byte_seconds=memory_byte_seconds,
            network_rx_bytes=network_rx_bytes,
            network_tx_bytes=network_tx_bytes,
            output_bytes=output_bytes,
            wall_seconds=wall_seconds,
        )

        usage_totals.additional_properties = d
        return usage_totals

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
