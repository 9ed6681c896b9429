"""The emulator's streaming multipart reader: the same parts whatever the chunking, large content in a file."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest

from worker.testing.emulator.content import LARGE_CONTENT, MemoryContentStore, Upload
from worker.testing.emulator.forms import MultipartStream
from worker.testing.emulator.store import CmisFault


async def form_body(content: bytes, file_name: str) -> tuple[bytes, bytes]:
    form = aiohttp.FormData(charset="utf-8", quote_fields=False)
    form.add_field("cmisaction", "createDocument")
    form.add_field("_charset_", "UTF-8")
    form.add_field("content", content, filename=file_name, content_type="application/pdf")
    writer = form()
    boundary = writer.content_type.split("boundary=")[1].strip('"')
    return await writer.as_bytes(), boundary.encode()


@pytest.mark.parametrize("chunk", [1, 5, 71, 4096, 10**9])
async def test_parts_are_the_same_however_the_body_is_cut(tmp_path: Path, chunk: int) -> None:
    body, boundary = await form_body(b"%PDF-1.7 \r\n--not a boundary\r\n" * 3, "Pl\u00e4n v1.pdf")
    stream = MultipartStream(boundary, 10**6, tmp_path)
    for start in range(0, len(body), chunk):
        stream.feed(body[start : start + chunk])
    parts = stream.finish()
    assert [v for _, v in parts[:2]] == [b"createDocument", b"UTF-8"]
    headers, content = parts[2]
    assert isinstance(content, Upload) and content.read() == b"%PDF-1.7 \r\n--not a boundary\r\n" * 3
    assert 'filename="Pl\u00e4n v1.pdf"' in headers["content-disposition"]


async def test_large_content_goes_to_a_file_and_the_store_adopts_it(tmp_path: Path) -> None:
    data = os.urandom(LARGE_CONTENT * 3 + 5)
    body, boundary = await form_body(data, "big.pdf")
    store = MemoryContentStore()
    stream = MultipartStream(boundary, len(data), store.upload_dir())
    for start in range(0, len(body), 256 * 1024):
        stream.feed(body[start : start + 256 * 1024])
    (_, content), *_ = [p for p in stream.finish() if isinstance(p[1], Upload)]
    assert isinstance(content, Upload) and content.data is None and content.path is not None
    assert content.size == len(data) and not content.contains(b"EICAR-STANDARD")
    content_id = store.put(content)
    assert store.file(content_id) is not None and store.get(content_id) == data
    assert [p.name for p in store.upload_dir().iterdir()] == [content_id]  # the upload file moved in


async def test_content_over_the_limit_is_refused_and_its_file_removed(tmp_path: Path) -> None:
    body, boundary = await form_body(b"x" * (LARGE_CONTENT + 10), "big.pdf")
    stream = MultipartStream(boundary, LARGE_CONTENT + 5, tmp_path)
    with pytest.raises(CmisFault, match="maximum allowed size"):
        stream.feed(body)
    stream.discard()
    assert os.listdir(tmp_path) == []
