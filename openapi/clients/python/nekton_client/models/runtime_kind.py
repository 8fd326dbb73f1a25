from enum import StrEnum


class RuntimeKind(StrEnum):
    AUTO = "auto"
    CONTAINER = "container"
    WASM = "wasm"

    def __str__(self) -> str:
        return str(self.value)
