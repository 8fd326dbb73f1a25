from http import HTTPStatus
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx

from ... import errors
from ...client import AuthenticatedClient, Client
from ...models.artifact_list import ArtifactList
from ...models.error_body import ErrorBody
from ...types import Response


def _get_kwargs(
    id: UUID,
) -> dict[str, Any]:

    _kwargs: dict[str, Any] = {
        "method": "get",
        "url": "/v1/jobs/{id}/artifacts".format(
            id=quote(str(id), safe=""),
        ),
    }

    return _kwargs


def _parse_response(
    *, client: AuthenticatedClient | Client, response: httpx.Response
) -> ArtifactList | ErrorBody | None:
    if response.status_code == 200:
        response_200 = ArtifactList.from_dict(response.json())

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
) -> Response[ArtifactList | ErrorBody]:
    return Response(
        status_code=HTTPStatus(response.status_code),
        content=response.content,
        headers=response.headers,
        parsed=_parse_response(client=client, response=response),
    )


def sync_detailed(
    id: UUID,
    *,
    client: AuthenticatedClient | Client,
) -> Response[ArtifactList | ErrorBody]:
    """List a job's artifacts.

     The artifacts of the job's latest attempt: the files collected after it ended, each with its
    size, the bytes stored, whether a cap cut it, its SHA-256 and mode; and the matches that were
    not collected (symlinks, hard links, directories, past a cap), with why. Empty while the
    job has not finished an attempt, or when its spec asked for none.

    Args:
        id (UUID):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ArtifactList | ErrorBody]
    """

    kwargs = _get_kwargs(
        id=id,
    )

    response = client.get_httpx_client().request(
        **kwargs,
    )

    return _build_response(client=client, response=response)


def sync(
    id: UUID,
    *,
    client: AuthenticatedClient | Client,
) -> ArtifactList | ErrorBody | None:
    """List a job's artifacts.

     The artifacts of the job's latest attempt: the files collected after it ended, each with its
    size, the bytes stored, whether a cap cut it, its SHA-256 and mode; and the matches that were
    not collected (symlinks, hard links, directories, past a cap), with why. Empty while the
    job has not finished an attempt, or when its spec asked for none.

    Args:
        id (UUID):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ArtifactList | ErrorBody
    """

    return sync_detailed(
        id=id,
        client=client,
    ).parsed


async def asyncio_detailed(
    id: UUID,
    *,
    client: AuthenticatedClient | Client,
) -> Response[ArtifactList | ErrorBody]:
    """List a job's artifacts.

     The artifacts of the job's latest attempt: the files collected after it ended, each with its
    size, the bytes stored, whether a cap cut it, its SHA-256 and mode; and the matches that were
    not collected (symlinks, hard links, directories, past a cap), with why. Empty while the
    job has not finished an attempt, or when its spec asked for none.

    Args:
        id (UUID):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        Response[ArtifactList | ErrorBody]
    """

    kwargs = _get_kwargs(
        id=id,
    )

    response = await client.get_async_httpx_client().request(**kwargs)

    return _build_response(client=client, response=response)


async def asyncio(
    id: UUID,
    *,
    client: AuthenticatedClient | Client,
) -> ArtifactList | ErrorBody | None:
    """List a job's artifacts.

     The artifacts of the job's latest attempt: the files collected after it ended, each with its
    size, the bytes stored, whether a cap cut it, its SHA-256 and mode; and the matches that were
    not collected (symlinks, hard links, directories, past a cap), with why. Empty while the
    job has not finished an attempt, or when its spec asked for none.

    Args:
        id (UUID):

    Raises:
        errors.UnexpectedStatus: If the server returns an undocumented status code and Client.raise_on_unexpected_status is True.
        httpx.TimeoutException: If the request takes longer than Client.timeout.

    Returns:
        ArtifactList | ErrorBody
    """

    return (
        await asyncio_detailed(
            id=id,
            client=client,
        )
    ).parsed
