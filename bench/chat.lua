-- wrk request script: a non-streaming OpenAI chat completion (POST with a small JSON body).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hello"}]}'
