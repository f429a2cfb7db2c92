"""The item a drop file holds, as pydantic models (lax mode: ``quality: "37"`` is 37, ``quality: high`` is refused).

Lossless: fields we don't know are kept (``model_extra``), ``secured`` is kept byte for byte but hidden from
``repr`` and logs (``SecretStr``). Null and missing are the same: null, or an empty list for lists.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

from tasks.utc import as_utc

INT64 = 2**63 - 1


def _none_to_list(value: Any) -> Any:
    return [] if value is None else value


_as_utc = as_utc  # naive timestamps are taken as UTC; aware ones are converted to it


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    from tasks.canonical import canonical_url  # canonical_url is the one judge of URL shape

    canonical_url(value)  # raises ValueError with the reason
    return value


def _secured_shape(value: SecretStr | None) -> SecretStr | None:
    """``BASE64;BASE64``: checked strictly, kept as given. The message never quotes the value."""
    if value is None:
        return None
    parts = value.get_secret_value().split(";")
    if len(parts) != 2 or not all(parts):
        raise ValueError("must be two base64 strings joined by ';'")
    for part in parts:
        try:
            base64.b64decode(part, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be two base64 strings joined by ';'") from None
    return value


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Int64 = Annotated[int, Field(ge=-INT64 - 1, le=INT64)]
Url = Annotated[str, AfterValidator(_http_url)]
Timestamp = Annotated[datetime, AfterValidator(_as_utc)]
NonEmpty = Annotated[str, AfterValidator(_non_empty)]


def _list_of(item: Any) -> Any:
    return Annotated[list[item], BeforeValidator(_none_to_list)]


class Lossless(BaseModel):
    """Unknown fields are kept, not refused: future drops may carry more."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


class Provider(Lossless):
    name: str | None = None
    domain: str | None = None


class ImageRef(Lossless):
    """An image as the drop declares it. The URL is untrusted and checked later; a bad one is not a bad drop."""

    url: str | None = None
    width: Int64 | None = None
    height: Int64 | None = None
    is_cached: bool | None = Field(default=None, alias="isCached")


class RelatedItem(Lossless):
    """Another article, cited by URL. Its ``webUrl`` is required: it is the link's target."""

    title: str | None = None
    excerpt: str | None = None
    published_at: Timestamp | None = Field(default=None, alias="publishedDateTime")
    web_url: Url = Field(alias="webUrl")
    type: str | None = None
    provider: Provider | None = None
    quality: Int64 | None = None
    images: _list_of(ImageRef) = []  # type: ignore[valid-type]


class Item(Lossless):
    """One news item: the whole front matter of one drop."""

    category: str | None = None
    title: NonEmpty
    excerpt: str | None = None
    published_at: Timestamp | None = Field(default=None, alias="publishedDateTime")
    original_url: Url | None = Field(default=None, alias="originalUrl")
    web_url: Url = Field(alias="webUrl")
    type: str | None = None
    quality: Int64 | None = None
    heat: Int64 | None = None
    published: bool | None = None
    provider: Provider | None = None
    topics: _list_of(str) = []  # type: ignore[valid-type]
    images: _list_of(ImageRef) = []  # type: ignore[valid-type]
    related: _list_of(RelatedItem) = []  # type: ignore[valid-type]
    secured: Annotated[SecretStr, AfterValidator(_secured_shape)] | None = None
