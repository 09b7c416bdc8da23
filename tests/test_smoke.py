from __future__ import annotations

import openai


def test_chat_roundtrip_with_sdk(one_of_each) -> None:
    fake, gw = one_of_each
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="x", max_retries=0, _strict_response_validation=True)
    out = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "hello from a"
    assert fake.last.json["model"] == "up-chat"
    chunks = list(
        client.chat.completions.create(model="m-chat", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 "
