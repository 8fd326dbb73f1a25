from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.import_result import ImportResult
from ...types import UNSET, File, Response, Unset


def _get_kwargs(
    *,
    body: File,
    reference: str | Unset = UNSET,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    params: dict[str, Any] = {}

    params["reference"] = reference

    params = {k: v for k, v in params.items() if v is not UNSET and v is not None}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/images/import",
        "params": params,
    }

    _kwargs["content"] = body.payload
    headers["Content-Type"] = "application/x-tar"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | ImportResult | None:
    if response.status_code == 201:
        response_201 = ImportResult.from_dict(response.json())

        return response_201

    if response.status_code == 400:
        response_400 = ErrorBody.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = ErrorBody.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = ErrorBody.from_dict(response.json())

        return response_403

    if response.status_code == 413:
        response_413 = ErrorBody.from_dict(response.json())

        return response_413

    if response.status_code == 422:
        response_422 = ErrorBody.from_dict(response.json())

        return response_422

    if response.status_code == 503:
        response_503 = ErrorBody.from_dict(response.json())

        return response_503

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | ImportResult]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: File,
    reference: str | Unset = UNSET,
) -> Response[ErrorBody | ImportResult]:
    """Import an OCI image layout (for air-gapped hosts). The body is a tar of the layout (plain,
    gzip or zstd: `oci-layout`, `index.json`, `blobs/sha256/...`); it is streamed to disk (up to
    the store's image size cap) and every blob is verified as in a pull.

    Args:
        reference (str | Unset):
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | ImportResult]
    """

    kwargs = _get_kwargs(
        body=body,
        reference=reference,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: File,
    reference: str | Unset = UNSET,
) -> ErrorBody | ImportResult | None:
    """Import an OCI image layout (for air-gapped hosts). The body is a tar of the layout (plain,
    gzip or zstd: `oci-layout`, `index.json`, `blobs/sha256/...`); it is streamed to disk (up to
    the store's image size cap) and every blob is verified as in a pull.

    Args:
        reference (str | Unset):
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | ImportResult
    """

    return sync_detailed(
        client=client,
        body=body,
        reference=reference,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: File,
    reference: str | Unset = UNSET,
) -> Response[ErrorBody | ImportResult]:
    """Import an OCI image layout (for air-gapped hosts). The body is a tar of the layout (plain,
    gzip or zstd: `oci-layout`, `index.json`, `blobs/sha256/...`); it is streamed to disk (up to
    the store's image size cap) and every blob is verified as in a pull.

    Args:
        reference (str | Unset):
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | ImportResult]
    """

    kwargs = _get_kwargs(
        body=body,
        reference=reference,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: File,
    reference: str | Unset = UNSET,
) -> ErrorBody | ImportResult | None:
    """Import an OCI image layout (for air-gapped hosts). The body is a tar of the layout (plain,
    gzip or zstd: `oci-layout`, `index.json`, `blobs/sha256/...`); it is streamed to disk (up to
    the store's image size cap) and every blob is verified as in a pull.

    Args:
        reference (str | Unset):
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | ImportResult
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
            reference=reference,
        )
    ).parsed
