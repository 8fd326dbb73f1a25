from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..types import UNSET, Unset

T = TypeVar("T", bound="VersionInfo")


@_attrs_define
class VersionInfo:
    """The server's version.

    Attributes:
        api_version (str): The HTTP API's version (the path prefix).
        migration (int | None): The newest schema migration the database has applied.
        migration_latest (int): The newest schema migration this server binary carries.
        version (str): The `nekton` crate version of the server binary.
        git_commit (None | str | Unset): The git commit the server was built from (the `NEKTON_GIT_COMMIT` variable at
            build
            time), when known.
    """

    api_version: str
    migration: int | None
    migration_latest: int
    version: str
    git_commit: None | str | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        api_version = self.api_version

        migration: int | None
        migration = self.migration

        migration_latest = self.migration_latest

        version = self.version

        git_commit: None | str | Unset
        if isinstance(self.git_commit, Unset):
            git_commit = UNSET
        else:
            git_commit = self.git_commit

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "api_version": api_version,
                "migration": migration,
                "migration_latest": migration_latest,
                "version": version,
            }
        )
        if git_commit is not UNSET:
            field_dict["git_commit"] = git_commit

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        api_version = d.pop("api_version")

        def _parse_migration(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        migration = _parse_migration(d.pop("migration"))

        migration_latest = d.pop("migration_latest")

        version = d.pop("version")

        def _parse_git_commit(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        git_commit = _parse_git_commit(d.pop("git_commit", UNSET))

        version_info = cls(
            api_version=api_version,
            migration=migration,
            migration_latest=migration_latest,
            version=version,
            git_commit=git_commit,
        )

        version_info.additional_properties = d
        return version_info

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
