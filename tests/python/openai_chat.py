"""Drives the official `openai` package against a keygate gateway.

Usage: openai_chat.py BASE_URL

Makes one chat completion and one streamed chat completion (asking for the usage chunk), and
prints one JSON object describing what the SDK returned. Exits 3 when `openai` is not
installed, so the caller can tell a missing package from a failure.
"""

import json
import sys

try:
    import openai
except ImportError as err:
    print(f"openai package not importable: {err}", file=sys.stderr)
    sys.exit(3)


def main() -> None:
    base_url = sys.argv[1].rstrip("/") + "/v1"
    client = openai.OpenAI(base_url=base_url, api_key="kg-sdk-test", max_retries=0, timeout=30)
    messages = [{"role": "user", "content": "Write a short sentence, please."}]

    completion = client.chat.completions.create(model="mock-model", messages=messages)
    chat = {
        "content": completion.choices[0].message.content,
        "finish_reason": completion.choices[0].finish_reason,
        "usage": completion.usage.model_dump() if completion.usage else None,
    }

    deltas, usage, finish_reason = [], None, None
    stream = client.chat.completions.create(
        model="mock-model",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.choices:
            choice = chunk.choices[0]
            if choice.delta and choice.delta.content:
                deltas.append(choice.delta.content)
            finish_reason = choice.finish_reason or finish_reason
        if chunk.usage:
            usage = chunk.usage.model_dump()
    streamed = {"deltas": deltas, "finish_reason": finish_reason, "usage": usage}

    print(json.dumps({"sdk_version": openai.__version__, "chat": chat, "stream": streamed}))


if __name__ == "__main__":
    main()
