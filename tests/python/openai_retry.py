"""Drives the official `openai` package into a client key's rate limit.

Usage: openai_retry.py BASE_URL API_KEY

Makes two chat completions one after the other with `max_retries=3`. With a key limited to
one request a second, the second meets a 429 carrying Retry-After and retry-after-ms; the SDK
is expected to wait as told, retry and succeed. Prints one JSON object with, for each call,
its duration (time.monotonic), the retries the SDK took, the status and the content. Exits 3
when `openai` is not installed, so the caller can tell a missing package from a failure.
"""

import json
import sys
import time

try:
    import openai
except ImportError as err:
    print(f"openai package not importable: {err}", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    base_url = sys.argv[1].rstrip("/") + "/v1"
    client = openai.OpenAI(base_url=base_url, api_key=sys.argv[2], max_retries=3, timeout=30)
    messages = [{"role": "user", "content": "Say something short."}]

    calls = []
    for _ in range(2):
        start = time.monotonic()
        raw = client.chat.completions.with_raw_response.create(model="mock-model", messages=messages)
        completion = raw.parse()
        calls.append(
            {
                "seconds": time.monotonic() - start,
                "retries_taken": getattr(raw, "retries_taken", None),
                "status": getattr(raw, "status_code", None),
                "content": completion.choices[0].message.content,
            }
        )

    print(json.dumps({"sdk_version": openai.__version__, "calls": calls}))


if __name__ == "__main__":
    main()
