-- wrk request script: a streaming OpenAI chat completion ("stream": true -> chunked text/event-stream).
-- wrk times each request to the end of the chunked body, i.e. to "data: [DONE]".
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hello"}],"stream": true}'
