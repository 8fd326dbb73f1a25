from enum import StrEnum


class Verdict(StrEnum):
    ACCEPTED = "accepted"
    CHECKER_ERROR = "checker_error"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    RUNTIME_ERROR = "runtime_error"
    SKIPPED = "skipped"
    TIME_LIMIT = "time_limit"
    WRONG_ANSWER = "wrong_answer"

    def __str__(self) -> str:
        return str(self.value)
