from http import HTTPStatus
from io import BytesIO
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.error_body import ErrorBody
from ...types import File, Response


def _get_kwargs(
    id: UUID,
    path: str,
) -> dict[str, Any]:

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{id}/artifacts/{path}".format(
            id=quote(str(id), safe=""),
            path=quote(str(path), safe=""),
        ),
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ErrorBody | File | None:
    if response.status_code == 200:
        response_200 = File(payload=BytesIO(response.content))

        return response_200

    if response.status_code == 400:
        response_400 = ErrorBody.from_dict(response.json())

        return response_400

    if response.status_code == 401:
        response_401 = ErrorBody.from_dict(response.json())

        return response_401

    if response.status_code == 403:
        response_403 = ErrorBody.from_dict(response.json())

        return response_403

    if response.status_code == 404:
        response_404 = ErrorBody.from_dict(response.json())

        return response_404

    if client.raise_on_unexpected_status:
        raise errors.UnexpectedStatus(response.status_code, response.content)
    else:
        return None


def _build_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> Response[ErrorBody | File]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    id: UUID,
    path: str,
    *,
    client: AuthenticatedClient | Client,
) -> Response[ErrorBody | File]:
    """Download one of a job's artifacts.

     One artifact of the job's latest attempt: its stored bytes, with `Content-Length`, the
    SHA-256 of those bytes (`X-Nekton-Sha256` in hex, `Repr-Digest` per RFC 9530), the file's
    collected size (`X-Nekton-Size`) and `X-Nekton-Truncated: true` when a cap cut it. The path
    is the listing's, slashes included (`reports/unit.xml`); for an absolute one
    (`/tmp/out.log`) the leading slash may be left out.

    Args:
        id (UUID):
        path (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | File]
    """

    kwargs = _get_kwargs(
        id=id,
        path=path,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    id: UUID,
    path: str,
    *,
    client: AuthenticatedClient | Client,
) -> ErrorBody | File | None:
    """Download one of a job's artifacts.

     One artifact of the job's latest attempt: its stored bytes, with `Content-Length`, the
    SHA-256 of those bytes (`X-Nekton-Sha256` in hex, `Repr-Digest` per RFC 9530), the file's
    collected size (`X-Nekton-Size`) and `X-Nekton-Truncated: true` when a cap cut it. The path
    is the listing's, slashes included (`reports/unit.xml`); for an absolute one
    (`/tmp/out.log`) the leading slash may be left out.

    Args:
        id (UUID):
        path (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | File
    """

    return sync_detailed(
        id=id,
        path=path,
        client=client,
    ).parsed


async def asyncio_detailed(
    id: UUID,
    path: str,
    *,
    client: AuthenticatedClient | Client,
) -> Response[ErrorBody | File]:
    """Download one of a job's artifacts.

     One artifact of the job's latest attempt: its stored bytes, with `Content-Length`, the
    SHA-256 of those bytes (`X-Nekton-Sha256` in hex, `Repr-Digest` per RFC 9530), the file's
    collected size (`X-Nekton-Size`) and `X-Nekton-Truncated: true` when a cap cut it. The path
    is the listing's, slashes included (`reports/unit.xml`); for an absolute one
    (`/tmp/out.log`) the leading slash may be left out.

    Args:
        id (UUID):
        path (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ErrorBody | File]
    """

    kwargs = _get_kwargs(
        id=id,
        path=path,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    id: UUID,
    path: str,
    *,
    client: AuthenticatedClient | Client,
) -> ErrorBody | File | None:
    """Download one of a job's artifacts.

     One artifact of the job's latest attempt: its stored bytes, with `Content-Length`, the
    SHA-256 of those bytes (`X-Nekton-Sha256` in hex, `Repr-Digest` per RFC 9530), the file's
    collected size (`X-Nekton-Size`) and `X-Nekton-Truncated: true` when a cap cut it. The path
    is the listing's, slashes included (`reports/unit.xml`); for an absolute one
    (`/tmp/out.log`) the leading slash may be left out.

    Args:
        id (UUID):
        path (str):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ErrorBody | File
    """

    return (
        await asyncio_detailed(
            id=id,
            path=path,
            client=client,
        )
    ).parsed
