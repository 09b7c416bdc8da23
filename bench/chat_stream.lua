-- wrk request script: a streaming OpenAI chat completion ("stream": true -> chunked text/event-stream).
-- wrk times each request to the end of the chunked body, i.e. to "data: [DONE]".
-- With BENCH_API_KEY set in wrk's environment (only for the "gateway+auth" target), it is sent as a
-- Bearer key; the plain targets run without it and send no Authorization header.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key ~= nil and key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hello"}],"stream": true}'
