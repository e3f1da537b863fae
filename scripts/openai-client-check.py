#!/usr/bin/env python3
"""The official `openai` Python client against a running `illume serve` (demo models).

Usage: openai-client-check.py http://127.0.0.1:PORT API_KEY

Chat with an image (whole and streamed), image generation (b64_json decoded to a PNG of the
requested size), an edit, and a call with a wrong key. Exits non-zero on the first failure.
"""

import base64
import io
import struct
import sys
import zlib

import openai


def png(width, height):
    """A small RGB gradient PNG, written by hand (no imaging library needed)."""
    rows = b"".join(
        b"\x00" + bytes(v for x in range(width) for v in (x * 255 // width, y * 255 // height, 90))
        for y in range(height)
    )

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


def main():
    base, key = sys.argv[1], sys.argv[2]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    image_url = "data:image/png;base64," + base64.b64encode(png(96, 64)).decode()
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture?"},
                {"type": "image_url", "image_url": {"url": image_url}},
            ],
        }
    ]

    reply = client.chat.completions.create(model="illume", messages=messages, max_tokens=6)
    answer = reply.choices[0].message.content
    assert isinstance(answer, str), reply
    assert reply.usage.completion_tokens == 6, reply.usage
    print(f"chat: {answer!r} ({reply.usage.prompt_tokens} prompt tokens)")

    pieces = []
    finish = None
    for chunk in client.chat.completions.create(model="illume", messages=messages, max_tokens=6, stream=True):
        delta = chunk.choices[0].delta.content
        if delta:
            pieces.append(delta)
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == answer, (pieces, answer)
    assert finish == "length", finish
    print(f"chat, streamed: {len(pieces)} pieces, the same text")

    generated = client.images.generate(
        model="illume", prompt="a red circle above a blue square", size="256x256", response_format="b64_json"
    )
    size = png_size(base64.b64decode(generated.data[0].b64_json))
    assert size == (256, 256), size
    print(f"image: {size[0]}x{size[1]} PNG")

    edited = client.images.edit(
        model="illume", image=("in.png", io.BytesIO(png(96, 64)), "image/png"), prompt="make it red"
    )
    size = png_size(base64.b64decode(edited.data[0].b64_json))
    assert size == (96, 64), size
    print(f"edit: {size[0]}x{size[1]} PNG")

    wrong = openai.OpenAI(base_url=f"{base}/v1", api_key="wrong-key", max_retries=0)
    try:
        wrong.chat.completions.create(model="illume", messages=messages, max_tokens=1)
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e
        print("wrong key: 401")
    else:
        raise AssertionError("a wrong key was accepted")


if __name__ == "__main__":
    main()
