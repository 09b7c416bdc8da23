-- wrk request script: a non-streaming OpenAI chat completion (POST with a small JSON body).
-- With BENCH_API_KEY set in wrk's environment (only for the "gateway+auth" target), it is sent as a
-- Bearer key; the plain targets run without it and send no Authorization header.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_API_KEY")
if key ~= nil and key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"hello"}]}'
