from http import HTTPStatus
from typing import Any

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...models.module import Module
from ...types import File, Response


def _get_kwargs(
    *,
    body: File,
) -> dict[str, Any]:
    headers: dict[str, Any] = {}

    _kwargs: dict[str, Any] = {
        "method": "post",
        "url": "/v1/modules",
    }

    _kwargs["content"] = body.payload
    headers["Content-Type"] = "application/wasm"

    _kwargs["headers"] = headers
    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | Module | None:
    if response.status_code == 200:
        response_200 = Module.from_dict(response.json())

        return response_200

    if response.status_code == 201:
        response_201 = Module.from_dict(response.json())

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

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | Module]:
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
) -> Response[ErrorBody | Module]:
    """Upload a Wasm module (a WASI preview 1 module or a WASI 0.2 component). Returns its digest, which
    jobs name as
    `module`. Uploading the same bytes again returns the same digest.

    Args:
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | Module]
    """

    kwargs = _get_kwargs(
        body=body,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    *,
    client: AuthenticatedClient | Client,
    body: File,
) -> ErrorBody | Module | None:
    """Upload a Wasm module (a WASI preview 1 module or a WASI 0.2 component). Returns its digest, which
    jobs name as
    `module`. Uploading the same bytes again returns the same digest.

    Args:
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | Module
    """

    return sync_detailed(
        client=client,
        body=body,
    ).parsed


async def asyncio_detailed(
    *,
    client: AuthenticatedClient | Client,
    body: File,
) -> Response[ErrorBody | Module]:
    """Upload a Wasm module (a WASI preview 1 module or a WASI 0.2 component). Returns its digest, which
    jobs name as
    `module`. Uploading the same bytes again returns the same digest.

    Args:
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | Module]
    """

    kwargs = _get_kwargs(
        body=body,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    *,
    client: AuthenticatedClient | Client,
    body: File,
) -> ErrorBody | Module | None:
    """Upload a Wasm module (a WASI preview 1 module or a WASI 0.2 component). Returns its digest, which
    jobs name as
    `module`. Uploading the same bytes again returns the same digest.

    Args:
        body (File): A binary request body (a Wasm module, a tar): the raw bytes, not JSON.

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | Module
    """

    return (
        await asyncio_detailed(
            client=client,
            body=body,
        )
    ).parsed
