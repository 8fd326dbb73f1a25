from enum import StrEnum


class ErrorDetailCode(StrEnum):
    ALREADY_FINISHED = "already_finished"
    BAD_REQUEST = "bad_request"
    CONFLICT = "conflict"
    FORBIDDEN = "forbidden"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    IMAGES_UNAVAILABLE = "images_unavailable"
    IMAGE_NOT_IN_REGISTRY = "image_not_in_registry"
    INTERNAL_ERROR = "internal_error"
    INVALID_HEADER = "invalid_header"
    INVALID_ID = "invalid_id"
    INVALID_IMAGE = "invalid_image"
    INVALID_JSON = "invalid_json"
    INVALID_LAYOUT = "invalid_layout"
    INVALID_MODULE = "invalid_module"
    INVALID_QUERY = "invalid_query"
    INVALID_REFERENCE = "invalid_reference"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    MODULE_NOT_FOUND = "module_not_found"
    NOT_FOUND = "not_found"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    RATE_LIMITED = "rate_limited"
    REGISTRY_ERROR = "registry_error"
    REGISTRY_NOT_ALLOWED = "registry_not_allowed"
    STORAGE_FULL = "storage_full"
    UNAUTHORIZED = "unauthorized"
    UNAVAILABLE = "unavailable"
    VALIDATION_FAILED = "validation_failed"

    def __str__(self) -> str:
        return str(self.value)
