from enum import StrEnum


class ImageKindView(StrEnum):
    CONTAINER = "container"
    WASM = "wasm"

    def __str__(self) -> str:
        return str(self.value)
