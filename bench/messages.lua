-- wrk request script: a non-streaming Anthropic Messages request (POST /v1/messages), the same prompt as chat.lua.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench-model","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}'
