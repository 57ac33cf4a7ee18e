"""Power BI values as bytes for the shared cache (JSON), and back.

Only what the broker itself returned from Power BI goes in: embed tokens with their reports, report and
dataset metadata. The shared tier encrypts these bytes (:mod:`token_broker.shared.keyring`).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .client import DatasetInfo, EmbedToken, ReportInfo

# A format marker: a value written by another layout of these classes is a miss (KeyError), not a wrong value.
_VERSION = 1


def _dump(kind: str, data: Any) -> bytes:
    return json.dumps({"v": _VERSION, "kind": kind, "data": data}, separators=(",", ":")).encode()


def _load(kind: str, blob: bytes) -> Any:
    document = json.loads(blob)
    if document.get("v") != _VERSION or document.get("kind") != kind:
        raise KeyError("another layout")
    return document["data"]


def encode_report(info: ReportInfo) -> bytes:
    return _dump("report", dataclasses.asdict(info))


def decode_report(blob: bytes) -> ReportInfo:
    return ReportInfo(**_load("report", blob))


def encode_dataset(info: DatasetInfo) -> bytes:
    return _dump("dataset", dataclasses.asdict(info))


def decode_dataset(blob: bytes) -> DatasetInfo:
    return DatasetInfo(**_load("dataset", blob))


def encode_embed(token: EmbedToken, reports: tuple[ReportInfo, ...]) -> bytes:
    return _dump("embed", {"token": token.token, "tokenId": token.token_id, "expiresOn": token.expires_on,
                           "reports": [dataclasses.asdict(r) for r in reports]})


def decode_embed(blob: bytes) -> tuple[EmbedToken, tuple[ReportInfo, ...]]:
    data = _load("embed", blob)
    token = EmbedToken(str(data["token"]), str(data["tokenId"]), float(data["expiresOn"]))
    return token, tuple(ReportInfo(**r) for r in data["reports"])


def decode_embed_bytes(blob: bytes) -> bytes:
    """Decode ``blob`` as an embed entry (raising as :func:`decode_embed` does) and return it unchanged."""
    decode_embed(blob)
    return blob


def encode_metadata(value: ReportInfo | DatasetInfo | None) -> bytes:
    """The proxy's metadata: a report, a dataset, or None (an allowed report that lives elsewhere)."""
    if isinstance(value, ReportInfo):
        return encode_report(value)
    if isinstance(value, DatasetInfo):
        return encode_dataset(value)
    return _dump("none", None)


def decode_metadata(blob: bytes) -> ReportInfo | DatasetInfo | None:
    kind = json.loads(blob).get("kind")
    if kind == "report":
        return decode_report(blob)
    if kind == "dataset":
        return decode_dataset(blob)
    _load("none", blob)
    return None
