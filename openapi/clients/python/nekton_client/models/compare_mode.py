from enum import StrEnum


class CompareMode(StrEnum):
    EXACT = "exact"
    FLOAT = "float"
    TOKENS = "tokens"
    TRIM = "trim"

    def __str__(self) -> str:
        return str(self.value)
