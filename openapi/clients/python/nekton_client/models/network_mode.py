from enum import StrEnum


class NetworkMode(StrEnum):
    BRIDGE = "bridge"
    NONE = "none"

    def __str__(self) -> str:
        return str(self.value)
